-- +goose Up
-- Schema app holds tenant data, in the shared database and in every silo
-- alike. Every table: tenant_id uuid not null leading the primary key and
-- every foreign key and unique constraint; ENABLE and FORCE row level
-- security with policy tenant_isolation below. TestCatalog enforces it.
create schema if not exists app;
grant usage on schema app to gatehouse_app;

create table app.users (
    tenant_id    uuid        not null,
    id           uuid        not null default gen_random_uuid(),
    email        text        not null check (length(email) between 3 and 320),
    display_name text        not null default '' check (length(display_name) <= 200),
    status       text        not null default 'active' check (status in ('active', 'disabled')),
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    primary key (tenant_id, id),
    unique (tenant_id, email)
);
alter table app.users enable row level security;
alter table app.users force row level security;
-- nullif: a pooled connection that once had the setting reads '' afterwards,
-- and ''::uuid would raise instead of matching nothing.
create policy tenant_isolation on app.users
    using (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)
    with check (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid);
grant select, insert, update, delete on app.users to gatehouse_app;

-- +goose Down
drop table app.users;
