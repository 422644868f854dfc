-- The OpenID Connect provider's authorization code flow: authorization
-- requests, their codes, consents and the sessions codes open. Every query
-- runs inside tenancy.DB.Tx.

-- name: CreateAuthRequest :one
insert into app.oidc_auth_requests (tenant_id, client_id, redirect_uri, scopes, state, nonce, response_mode,
                                    code_challenge, prompt, max_age, login_hint, ui_locales, acr_values, expires_at)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
returning *;

-- name: GetAuthRequest :one
-- A request still waiting for its sign-in or its code's exchange.
select * from app.oidc_auth_requests
where tenant_id = $1 and id = $2 and expires_at > now() and exchanged_at is null;

-- name: CompleteAuthRequest :execrows
-- Records who signed in for a request that has no user yet.
update app.oidc_auth_requests set user_id = $3, auth_time = $4, amr = $5
where tenant_id = $1 and id = $2 and user_id is null and expires_at > now();

-- name: SaveAuthCode :execrows
-- Gives a signed-in request its one code, which must be exchanged within
-- a minute.
update app.oidc_auth_requests set code_hash = $3, expires_at = now() + interval '60 seconds'
where tenant_id = $1 and id = $2 and user_id is not null and code_hash is null and expires_at > now();

-- name: DeleteAuthRequest :exec
-- Exchanged requests stay until they expire, to catch a replayed code.
delete from app.oidc_auth_requests where tenant_id = $1 and id = $2 and exchanged_at is null;

-- name: PruneAuthRequests :exec
delete from app.oidc_auth_requests where tenant_id = $1 and expires_at < now();

-- name: GetConsent :one
select scopes from app.oidc_consents where tenant_id = $1 and user_id = $2 and client_id = $3;

-- name: SaveConsent :exec
insert into app.oidc_consents (tenant_id, user_id, client_id, scopes)
values ($1, $2, $3, $4)
on conflict (tenant_id, user_id, client_id) do update set scopes = excluded.scopes, granted_at = now();

-- name: GetLiveAppSession :one
-- An app's session that stands, with its account: not revoked, the
-- account active, the app enabled. (Expiry is compared by the caller.)
select sqlc.embed(u), sqlc.embed(s)
from app.sessions s
join app.users u on u.tenant_id = s.tenant_id and u.id = s.user_id
join app.oidc_apps a on a.tenant_id = s.tenant_id and a.client_id = s.client_id
where s.tenant_id = $1 and s.id = $2
  and s.revoked_at is null and u.status = 'active' and not a.disabled;

-- name: GetRefreshSession :one
-- The session a refresh token belongs to, spent or not, for the app that
-- presents it.
select s.*, r.used_at as token_used_at, r.idle_expires_at as token_idle_expires_at
from app.refresh_tokens r
join app.sessions s on s.tenant_id = r.tenant_id and s.id = r.session_id
where r.tenant_id = $1 and r.token_hash = $2;

-- name: RevokeAppSessions :execrows
-- Ends a user's sessions with one app.
update app.sessions set revoked_at = now(), revoked_reason = $4
where tenant_id = $1 and user_id = $2 and client_id = $3 and revoked_at is null;

-- name: SpendClientAssertion :execrows
-- Records an assertion's id; no row: it was used before.
insert into app.oidc_client_assertions (tenant_id, client_id, jti, expires_at)
values ($1, $2, $3, $4)
on conflict do nothing;

-- name: PruneClientAssertions :exec
delete from app.oidc_client_assertions where tenant_id = $1 and expires_at < now();

-- name: LockAuthRequestByCode :one
-- The request a code was issued for, with its user, the request locked
-- until commit: of two exchanges of one code, the second waits, then
-- finds it spent.
select sqlc.embed(r), sqlc.embed(u)
from app.oidc_auth_requests r
join app.users u on u.tenant_id = r.tenant_id and u.id = r.user_id
where r.tenant_id = $1 and r.code_hash = $2
for update of r;

-- name: OpenCodeSession :one
-- What a code's exchange writes, in one round trip: the session it opens
-- with the app, the spent mark on its request, and, when a hash is
-- given, the family's first refresh token.
with sess as (
    insert into app.sessions (tenant_id, user_id, expires_at, ip, user_agent, client_id, scopes, auth_time, amr)
    values (sqlc.arg(tenant_id)::uuid, sqlc.arg(user_id)::uuid, sqlc.arg(expires_at)::timestamptz, sqlc.narg(ip)::inet,
            sqlc.narg(user_agent)::text, sqlc.arg(client_id)::text, sqlc.arg(scopes)::text[], sqlc.narg(auth_time)::timestamptz,
            sqlc.arg(amr)::text[])
    returning id, expires_at
), spent as (
    update app.oidc_auth_requests r set exchanged_at = now(), session_id = (select id from sess)
    where r.tenant_id = sqlc.arg(tenant_id)::uuid and r.id = sqlc.arg(request_id)::uuid
), refresh as (
    insert into app.refresh_tokens (tenant_id, token_hash, session_id, idle_expires_at)
    select sqlc.arg(tenant_id)::uuid, sqlc.narg(refresh_hash)::bytea, sess.id, least(sqlc.arg(idle_until)::timestamptz, sess.expires_at)
    from sess where sqlc.narg(refresh_hash)::bytea is not null
)
select id, expires_at from sess;
