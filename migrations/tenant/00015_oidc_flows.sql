-- +goose Up
-- The authorization code flow of each tenant's OpenID Connect provider.
--
-- An authorization request lives from the app's redirect to the hosted
-- sign-in until its code is exchanged: 10 minutes to sign in, then 60
-- seconds for the code. Only the SHA-256 of the code is kept. An exchanged
-- request is kept until it expires, naming the session its code opened, so
-- that a replayed code can revoke what it issued.
create table app.oidc_auth_requests (
    tenant_id      uuid        not null,
    id             uuid        not null default gen_random_uuid(),
    client_id      text        not null,
    redirect_uri   text        not null check (length(redirect_uri) <= 2000),
    scopes         text[]      not null check (cardinality(scopes) <= 20),
    state          text        check (length(state) <= 2048),
    nonce          text        check (length(nonce) <= 512),
    response_mode  text        check (response_mode in ('query', 'fragment', 'form_post')),
    -- PKCE: S256 only.
    code_challenge text        check (code_challenge ~ '^[A-Za-z0-9_-]{43}$'),
    prompt         text[]      not null default '{}',
    max_age        integer     check (max_age >= 0),
    login_hint     text        check (length(login_hint) <= 320),
    ui_locales     text[]      not null default '{}' check (cardinality(ui_locales) <= 10),
    acr_values     text[]      not null default '{}' check (cardinality(acr_values) <= 10),
    -- Set once the user signed in (and consented) on the hosted pages.
    user_id        uuid,
    auth_time      timestamptz,
    amr            text[],
    code_hash      bytea       check (length(code_hash) = 32),
    -- Set by the exchange of the code: the session it opened.
    session_id     uuid,
    exchanged_at   timestamptz,
    created_at     timestamptz not null default now(),
    expires_at     timestamptz not null,
    primary key (tenant_id, id),
    foreign key (tenant_id, client_id) references app.oidc_apps (tenant_id, client_id) on delete cascade,
    foreign key (tenant_id, user_id) references app.users (tenant_id, id) on delete cascade,
    check ((user_id is null) = (auth_time is null)),
    check (code_hash is null or user_id is not null),
    check (exchanged_at is null or code_hash is not null)
);
create unique index oidc_auth_requests_code on app.oidc_auth_requests (tenant_id, code_hash) where code_hash is not null;
create index oidc_auth_requests_expiry on app.oidc_auth_requests (tenant_id, expires_at);

-- What a user let a third-party app have: asked again when the app asks
-- for more, or with prompt=consent.
create table app.oidc_consents (
    tenant_id  uuid        not null,
    user_id    uuid        not null,
    client_id  text        not null,
    scopes     text[]      not null,
    granted_at timestamptz not null default now(),
    primary key (tenant_id, user_id, client_id),
    foreign key (tenant_id, client_id) references app.oidc_apps (tenant_id, client_id) on delete cascade,
    foreign key (tenant_id, user_id) references app.users (tenant_id, id) on delete cascade
);

-- A session opened by an app's authorization code (or none: a Gatehouse
-- sign-in) says which app, with which scopes, and when the user signed in.
-- Deleting the app ends its sessions.
alter table app.sessions
    add column client_id text,
    add column scopes    text[],
    add column auth_time timestamptz,
    add column amr       text[],
    add foreign key (tenant_id, client_id) references app.oidc_apps (tenant_id, client_id) on delete cascade;

-- +goose StatementBegin
do $$
declare t text;
begin
    foreach t in array array['oidc_auth_requests', 'oidc_consents'] loop
        execute format('alter table app.%I enable row level security', t);
        execute format('alter table app.%I force row level security', t);
        execute format($p$create policy tenant_isolation on app.%I
            using (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)$p$, t);
    end loop;
end
$$;
-- +goose StatementEnd
grant select, insert, update, delete on app.oidc_auth_requests, app.oidc_consents to gatehouse_app;

-- +goose Down
alter table app.sessions drop column client_id, drop column scopes, drop column auth_time, drop column amr;
drop table app.oidc_consents, app.oidc_auth_requests;
