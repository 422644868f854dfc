-- +goose Up
-- Abuse protection, shared by every instance through the database.

-- Progressive lockout: failed_logins counts failures since
-- first_failed_at (a 15-minute window); reaching the limit locks the
-- account until locked_until, for longer at each repeat (lockouts).
alter table app.users
    add column failed_logins   integer not null default 0,
    add column first_failed_at timestamptz,
    add column locked_until    timestamptz,
    add column lockouts        integer not null default 0;

-- Fixed-window request counters, per tenant and key (an endpoint and an IP,
-- or an endpoint for the whole tenant).
create table app.rate_limits (
    tenant_id    uuid        not null,
    key          text        not null check (length(key) <= 200),
    window_start timestamptz not null,
    hits         integer     not null,
    primary key (tenant_id, key, window_start)
);
alter table app.rate_limits enable row level security;
alter table app.rate_limits force row level security;
create policy tenant_isolation on app.rate_limits
    using (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)
    with check (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid);
grant select, insert, update, delete on app.rate_limits to gatehouse_app;

-- +goose Down
drop table app.rate_limits;
alter table app.users drop column failed_logins, drop column first_failed_at, drop column locked_until, drop column lockouts;
