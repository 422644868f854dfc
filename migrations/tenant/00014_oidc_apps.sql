-- +goose Up
-- OpenID Connect apps (relying parties) a tenant registers: how each may
-- sign its users in (kind, redirect URIs, grants, scopes) and how it
-- proves itself at the token endpoint: client secrets, of which only the
-- SHA-256 of their 256 random bits is kept, or a JWKS of public keys
-- (private_key_jwt). The rules the service checks are repeated here where
-- a row can show them, so no path around the service stores a web app
-- without a secret method or a public app with one.
create table app.oidc_apps (
    tenant_id                  uuid        not null,
    id                         uuid        not null default gen_random_uuid(),
    -- Public and random: it travels in browsers' address bars.
    client_id                  text        not null check (client_id ~ '^[A-Za-z0-9_-]{22,64}$'),
    name                       text        not null check (length(name) between 1 and 100),
    kind                       text        not null check (kind in ('web', 'spa', 'native', 'machine')),
    token_endpoint_auth_method text        not null check (token_endpoint_auth_method in
                                               ('client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none')),
    redirect_uris              text[]      not null default '{}' check (cardinality(redirect_uris) <= 10),
    post_logout_redirect_uris  text[]      not null default '{}' check (cardinality(post_logout_redirect_uris) <= 10),
    grant_types                text[]      not null check (cardinality(grant_types) between 1 and 2
                                               and grant_types <@ array['authorization_code', 'refresh_token', 'client_credentials']),
    scopes                     text[]      not null default '{}' check (scopes <@ array['openid', 'profile', 'email', 'offline_access']),
    -- Seconds; null: the tenant's access-token lifetime.
    access_token_ttl           integer     check (access_token_ttl between 60 and 86400),
    first_party                boolean     not null default false,
    id_token_alg               text        not null default 'EdDSA' check (id_token_alg in ('EdDSA', 'RS256')),
    -- Public keys only (the service refuses private members), for
    -- private_key_jwt.
    jwks                       jsonb       check (octet_length(jwks::text) <= 8192),
    disabled                   boolean     not null default false,
    created_at                 timestamptz not null default now(),
    updated_at                 timestamptz not null default now(),
    primary key (tenant_id, id),
    unique (tenant_id, client_id),
    check ((kind in ('spa', 'native')) = (token_endpoint_auth_method = 'none')),
    check ((token_endpoint_auth_method = 'private_key_jwt') = (jwks is not null)),
    check ((kind = 'machine') = ('client_credentials' = any (grant_types))),
    check (kind <> 'machine' or (grant_types = array['client_credentials'] and cardinality(redirect_uris) = 0
                                 and cardinality(post_logout_redirect_uris) = 0 and not first_party))
);

-- An app's client secrets: the current one (expires_at null) and, for a
-- while after a rotation, the one it replaced.
create table app.oidc_app_secrets (
    tenant_id   uuid        not null,
    app_id      uuid        not null,
    id          uuid        not null default gen_random_uuid(),
    secret_hash bytea       not null check (length(secret_hash) = 32),
    created_at  timestamptz not null,
    expires_at  timestamptz,
    primary key (tenant_id, app_id, id),
    foreign key (tenant_id, app_id) references app.oidc_apps (tenant_id, id) on delete cascade
);
create unique index oidc_app_secrets_current on app.oidc_app_secrets (tenant_id, app_id) where expires_at is null;

-- +goose StatementBegin
do $$
declare t text;
begin
    foreach t in array array['oidc_apps', 'oidc_app_secrets'] loop
        execute format('alter table app.%I enable row level security', t);
        execute format('alter table app.%I force row level security', t);
        execute format($p$create policy tenant_isolation on app.%I
            using (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)$p$, t);
    end loop;
end
$$;
-- +goose StatementEnd
grant select, insert, update, delete on app.oidc_apps, app.oidc_app_secrets to gatehouse_app;

-- +goose Down
drop table app.oidc_app_secrets, app.oidc_apps;
