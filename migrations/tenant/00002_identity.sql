-- +goose Up
-- Identity: passwords, sessions with their refresh-token families, the
-- tenant's JWT signing keys, and the audit trail. Same rules as every app
-- table (see 00001): tenant_id leads every key, RLS enabled and forced.

alter table app.users
    add column password_hash     text check (password_hash is null or password_hash like '$argon2id$%'),
    add column email_verified_at timestamptz,
    -- Until ReBAC moves admin rights into SpiceDB.
    add column role              text not null default 'member' check (role in ('member', 'admin')),
    add column last_login_at     timestamptz;

-- A session is one sign-in: a browser's cookie or an API client's refresh
-- token family. Revoking it ends both.
create table app.sessions (
    tenant_id      uuid        not null,
    id             uuid        not null default gen_random_uuid(),
    user_id        uuid        not null,
    created_at     timestamptz not null default now(),
    last_seen_at   timestamptz not null default now(),
    expires_at     timestamptz not null, -- absolute lifetime of the family
    revoked_at     timestamptz,
    revoked_reason text check (length(revoked_reason) <= 100),
    ip             inet,
    user_agent     text check (length(user_agent) <= 512),
    primary key (tenant_id, id),
    foreign key (tenant_id, user_id) references app.users (tenant_id, id) on delete cascade
);
create index sessions_user on app.sessions (tenant_id, user_id);

-- Refresh tokens are stored only as SHA-256 hashes of their 256 random
-- bits. used_at marks a spent token: presenting it again is reuse.
create table app.refresh_tokens (
    tenant_id       uuid        not null,
    token_hash      bytea       not null check (length(token_hash) = 32),
    session_id      uuid        not null,
    created_at      timestamptz not null default now(),
    idle_expires_at timestamptz not null,
    used_at         timestamptz,
    primary key (tenant_id, token_hash),
    foreign key (tenant_id, session_id) references app.sessions (tenant_id, id) on delete cascade
);
create index refresh_tokens_session on app.refresh_tokens (tenant_id, session_id);

-- Ed25519 keys that sign the tenant's access tokens. The private key is
-- sealed (secrets.Sealer) under the tenant's Transit key.
create table app.signing_keys (
    tenant_id          uuid        not null,
    kid                text        not null check (kid ~ '^[A-Za-z0-9_-]{8,64}$'),
    algorithm          text        not null default 'EdDSA' check (algorithm = 'EdDSA'),
    public_key         bytea       not null check (length(public_key) = 32),
    private_key_sealed bytea       not null,
    created_at         timestamptz not null default now(),
    retiring_at        timestamptz, -- replaced: signs no more, still published
    retired_at         timestamptz, -- no longer published
    primary key (tenant_id, kid)
);

-- The audit trail: append-only (the app role may not update or delete) and
-- hash-chained per tenant: each event stores the hash of the one before,
-- so an altered or deleted event breaks the chain. audit_heads holds each
-- tenant's last link; writers lock it, which orders the chain.
create table app.audit_events (
    tenant_id  uuid        not null,
    seq        bigint      not null check (seq > 0),
    at         timestamptz not null,
    actor_id   uuid,
    action     text        not null check (length(action) between 1 and 100),
    target     text        check (length(target) <= 200),
    outcome    text        not null check (outcome in ('success', 'failure', 'denied')),
    ip         inet,
    user_agent text        check (length(user_agent) <= 512),
    request_id text        check (length(request_id) <= 100),
    details    jsonb,
    prev_hash  bytea       not null check (length(prev_hash) = 32),
    hash       bytea       not null check (length(hash) = 32),
    primary key (tenant_id, seq)
);
create index audit_events_actor on app.audit_events (tenant_id, actor_id, seq);
create index audit_events_action on app.audit_events (tenant_id, action, seq);

create table app.audit_heads (
    tenant_id uuid   not null primary key,
    seq       bigint not null,
    hash      bytea  not null check (length(hash) = 32)
);

-- +goose StatementBegin
do $$
declare t text;
begin
    foreach t in array array['sessions', 'refresh_tokens', 'signing_keys', 'audit_events', 'audit_heads'] loop
        execute format('alter table app.%I enable row level security', t);
        execute format('alter table app.%I force row level security', t);
        execute format($p$create policy tenant_isolation on app.%I
            using (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)$p$, t);
    end loop;
end
$$;
-- +goose StatementEnd
grant select, insert, update, delete on app.sessions, app.refresh_tokens, app.signing_keys, app.audit_heads to gatehouse_app;
grant select, insert on app.audit_events to gatehouse_app;

-- +goose Down
drop table app.audit_heads, app.audit_events, app.signing_keys, app.refresh_tokens, app.sessions;
alter table app.users drop column password_hash, drop column email_verified_at, drop column role, drop column last_login_at;
