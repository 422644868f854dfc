-- +goose Up
-- The ids (jti) of client assertions (private_key_jwt) already used, until
-- they expire: an assertion authenticates once (OpenID Connect Core,
-- section 9).
create table app.oidc_client_assertions (
    tenant_id  uuid        not null,
    client_id  text        not null,
    jti        text        not null check (length(jti) between 1 and 256),
    expires_at timestamptz not null,
    primary key (tenant_id, client_id, jti)
);
create index oidc_client_assertions_expiry on app.oidc_client_assertions (tenant_id, expires_at);
alter table app.oidc_client_assertions enable row level security;
alter table app.oidc_client_assertions force row level security;
create policy tenant_isolation on app.oidc_client_assertions
    using (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)
    with check (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid);
grant select, insert, update, delete on app.oidc_client_assertions to gatehouse_app;

-- +goose Down
drop table app.oidc_client_assertions;
