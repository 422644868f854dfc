-- Identity: accounts, sessions, refresh tokens, signing keys, audit. Every
-- query runs inside tenancy.DB.Tx; the tenant_id predicates keep plans on
-- the (tenant_id, ...) keys.

-- name: CreateAccount :one
insert into app.users (tenant_id, email, display_name, password_hash, role)
values ($1, $2, $3, $4, $5)
returning *;

-- name: GetUserByEmail :one
select * from app.users where tenant_id = $1 and email = $2;

-- name: UpdateDisplayName :one
update app.users set display_name = $3, updated_at = now()
where tenant_id = $1 and id = $2
returning *;

-- name: SetPasswordHash :exec
update app.users set password_hash = $3, updated_at = now()
where tenant_id = $1 and id = $2;

-- name: RecordLogin :exec
update app.users set last_login_at = now() where tenant_id = $1 and id = $2;

-- name: CreateSession :one
insert into app.sessions (tenant_id, user_id, expires_at, ip, user_agent)
values ($1, $2, $3, $4, $5)
returning *;

-- name: GetSession :one
select * from app.sessions where tenant_id = $1 and id = $2;

-- name: RevokeSession :execrows
update app.sessions set revoked_at = now(), revoked_reason = $4
where tenant_id = $1 and id = $2 and user_id = $3 and revoked_at is null;

-- name: RevokeOtherSessions :execrows
update app.sessions set revoked_at = now(), revoked_reason = $4
where tenant_id = $1 and user_id = $2 and id <> $3 and revoked_at is null;

-- name: CreateRefreshToken :exec
insert into app.refresh_tokens (tenant_id, token_hash, session_id, idle_expires_at)
values ($1, $2, $3, $4);

-- name: ListSigningKeys :many
select * from app.signing_keys where tenant_id = $1 and retired_at is null order by created_at desc;

-- name: CreateSigningKey :exec
insert into app.signing_keys (tenant_id, kid, public_key, private_key_sealed)
values ($1, $2, $3, $4);

-- name: RetireSigningKeys :execrows
-- Stops every key but the newest from signing; they stay published.
update app.signing_keys set retiring_at = now()
where tenant_id = $1 and kid <> $2 and retiring_at is null;

-- name: DropRetiredSigningKeys :execrows
-- Unpublishes keys that stopped signing before the cutoff: no token they
-- signed is still valid.
update app.signing_keys set retired_at = now()
where tenant_id = $1 and retiring_at < $2 and retired_at is null;

-- name: LockAuditHead :one
select seq, hash from app.audit_heads where tenant_id = $1 for update;

-- name: InitAuditHead :exec
insert into app.audit_heads (tenant_id, seq, hash) values ($1, 0, $2)
on conflict (tenant_id) do nothing;

-- name: AdvanceAuditHead :exec
update app.audit_heads set seq = $2, hash = $3 where tenant_id = $1;

-- name: AppendAuditEvent :exec
insert into app.audit_events (tenant_id, seq, at, actor_id, action, target, outcome, ip, user_agent, request_id, details, prev_hash, hash)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13);

-- name: ListAuditEvents :many
select * from app.audit_events where tenant_id = $1 and seq > $2 order by seq limit $3;

-- name: GetAuditHead :one
select seq, hash from app.audit_heads where tenant_id = $1;

-- name: SpendRefreshToken :one
-- Marks an unspent token spent and returns it. Of two concurrent callers
-- with one token the second waits for the first's row lock, then finds it
-- spent: exactly one wins.
update app.refresh_tokens set used_at = now()
where tenant_id = $1 and token_hash = $2 and used_at is null
returning *;

-- name: GetRefreshToken :one
select * from app.refresh_tokens where tenant_id = $1 and token_hash = $2;

-- name: RevokeSessionByID :execrows
update app.sessions set revoked_at = now(), revoked_reason = $3
where tenant_id = $1 and id = $2 and revoked_at is null;

-- name: TouchSession :exec
update app.sessions set last_seen_at = now() where tenant_id = $1 and id = $2;

-- name: ListUserSessions :many
select * from app.sessions
where tenant_id = $1 and user_id = $2 and revoked_at is null and expires_at > now()
order by last_seen_at desc
limit 100;

-- name: HitRateLimit :one
insert into app.rate_limits (tenant_id, key, window_start, hits)
values ($1, $2, $3, 1)
on conflict (tenant_id, key, window_start) do update set hits = app.rate_limits.hits + 1
returning hits;

-- name: PruneRateLimits :exec
delete from app.rate_limits where tenant_id = $1 and window_start < $2;

-- name: RecordLoginFailure :one
-- Counts a failed password within a 15-minute window; the limit-th
-- failure locks the account for lock_seconds times 2^(earlier lockouts), at
-- most a day.
update app.users set
    failed_logins   = case when first_failed_at is null or first_failed_at < now() - interval '15 minutes' then 1 else failed_logins + 1 end,
    first_failed_at = case when first_failed_at is null or first_failed_at < now() - interval '15 minutes' then now() else first_failed_at end
where tenant_id = $1 and id = $2
returning failed_logins, lockouts;

-- name: LockAccount :exec
update app.users set
    locked_until  = now() + least(sqlc.arg(lock_seconds)::integer * power(2, lockouts) * interval '1 second', interval '1 day'),
    lockouts      = lockouts + 1,
    failed_logins = 0, first_failed_at = null
where tenant_id = $1 and id = $2;

-- name: ClearLoginFailures :exec
update app.users set failed_logins = 0, first_failed_at = null, lockouts = 0, locked_until = null
where tenant_id = $1 and id = $2;
