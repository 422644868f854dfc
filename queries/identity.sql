-- Identity: accounts, sessions, refresh tokens, signing keys, audit. Every
-- query runs inside tenancy.DB.Tx; the tenant_id predicates keep plans on
-- the (tenant_id, ...) keys.

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
insert into app.signing_keys (tenant_id, kid, algorithm, public_key, private_key_sealed)
values ($1, $2, $3, $4, $5);

-- name: RetireSigningKeys :execrows
-- Stops every key of the newest one's algorithm but it from signing; they
-- stay published.
update app.signing_keys set retiring_at = now()
where tenant_id = $1 and kid <> $2 and retiring_at is null and algorithm = $3;

-- name: DropRetiredSigningKeys :execrows
-- Unpublishes keys that stopped signing before the cutoff: no token they
-- signed is still valid.
update app.signing_keys set retired_at = now()
where tenant_id = $1 and retiring_at < $2 and retired_at is null;

-- name: InitAuditHead :exec
insert into app.audit_heads (tenant_id, seq, hash) values ($1, 0, $2)
on conflict (tenant_id) do nothing;

-- name: AppendAuditEvent :one
-- Appends an event to the tenant's chain in one round trip: takes the
-- chain head (locked until commit, which orders concurrent writers),
-- links the event to it and advances it. hash = sha256(previous hash ||
-- the event's content digest || seq as 8 big-endian bytes), computed here
-- because only here is seq known. No row: the tenant has no head yet.
with head as (
    select h.seq, h.hash from app.audit_heads h where h.tenant_id = sqlc.arg(tenant_id) for update
), next as (
    update app.audit_heads h
    set seq = head.seq + 1, hash = sha256(head.hash || sqlc.arg(digest)::bytea || int8send(head.seq + 1))
    from head
    where h.tenant_id = sqlc.arg(tenant_id)
    returning h.seq, h.hash, head.hash as prev_hash
)
insert into app.audit_events (tenant_id, seq, at, actor_id, action, target, outcome, ip, user_agent, request_id, details, prev_hash, hash)
select sqlc.arg(tenant_id), next.seq, sqlc.arg(at), sqlc.narg(actor_id), sqlc.arg(action), sqlc.narg(target), sqlc.arg(outcome),
       sqlc.narg(ip), sqlc.narg(user_agent), sqlc.narg(request_id), sqlc.narg(details), next.prev_hash, next.hash
from next
returning seq;

-- name: ListAuditEvents :many
select * from app.audit_events where tenant_id = $1 and seq > $2 order by seq limit $3;

-- name: GetAuditHead :one
select seq, hash from app.audit_heads where tenant_id = $1;

-- name: RotateRefreshToken :one
-- One refresh in one round trip: spends the presented token (of two
-- concurrent callers the second waits for the first's row lock, then finds
-- it spent: exactly one wins), checks its session and user are live and
-- its idle time not over, issues the family's next token and touches the
-- session. No row: the token is unknown or already spent. A zero user_id:
-- spent now, but its family is over (the caller rolls back).
with spent as (
    update app.refresh_tokens r set used_at = now()
    where r.tenant_id = sqlc.arg(tenant_id) and r.token_hash = sqlc.arg(token_hash) and r.used_at is null
    returning r.session_id, r.idle_expires_at
), live as (
    select s.id, s.user_id, s.expires_at
    from spent
    join app.sessions s on s.tenant_id = sqlc.arg(tenant_id) and s.id = spent.session_id
    join app.users u on u.tenant_id = s.tenant_id and u.id = s.user_id
    where s.revoked_at is null and s.expires_at > now() and spent.idle_expires_at > now() and u.status = 'active'
      -- A family belongs to one app (null: Gatehouse's own sign-ins) and
      -- is refreshed only by it.
      and s.client_id is not distinct from sqlc.narg(client_id)::text
    -- A logout or disable committing while this waits is seen: locking
    -- rechecks the conditions against the row's newest version.
    for share of s, u
), fresh as (
    insert into app.refresh_tokens (tenant_id, token_hash, session_id, idle_expires_at)
    select sqlc.arg(tenant_id), sqlc.arg(next_hash), live.id,
           least(now() + sqlc.arg(idle_seconds)::integer * interval '1 second', live.expires_at)
    from live
    returning session_id
), touched as (
    update app.sessions t set last_seen_at = now()
    where t.tenant_id = sqlc.arg(tenant_id) and t.id in (select f.session_id from fresh f)
)
select spent.session_id, coalesce(live.user_id, '00000000-0000-0000-0000-000000000000'::uuid)::uuid as user_id
from spent left join live on true;

-- name: GetRefreshToken :one
select * from app.refresh_tokens where tenant_id = $1 and token_hash = $2;

-- name: RevokeSessionByID :execrows
update app.sessions set revoked_at = now(), revoked_reason = $3
where tenant_id = $1 and id = $2 and revoked_at is null;

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

-- name: ClearLoginFailures :exec
-- Lifts every sign-in throttle of the account: its clock (locked_until),
-- and the records of every client network it was tried from (rate-limit
-- rows under 'signin/<account id>/').
with networks as (
    delete from app.rate_limits r
    where r.tenant_id = sqlc.arg(tenant_id) and starts_with(r.key, 'signin/' || sqlc.arg(id)::uuid::text || '/')
)
update app.users u set failed_logins = 0, first_failed_at = null, lockouts = 0, locked_until = null
where u.tenant_id = sqlc.arg(tenant_id) and u.id = sqlc.arg(id);

-- name: ListUsersPage :many
-- A page of the tenant's users by email, after a cursor (the last email
-- of the previous page), optionally only those whose email contains a
-- search string.
select * from app.users
where tenant_id = sqlc.arg(tenant_id)
  and email > sqlc.arg(after)
  and (sqlc.arg(search)::text = '' or strpos(email, sqlc.arg(search)::text) > 0)
order by email
limit sqlc.arg(page_size);

-- name: AdminCreateUser :one
insert into app.users (tenant_id, email, display_name, role)
values ($1, $2, $3, $4)
returning *;

-- name: AdminUpdateUser :one
update app.users set
    display_name = coalesce(sqlc.narg(display_name), display_name),
    status       = coalesce(sqlc.narg(status), status),
    role         = coalesce(sqlc.narg(role), role),
    updated_at   = now()
where tenant_id = sqlc.arg(tenant_id) and id = sqlc.arg(id)
returning *;

-- name: DeleteUser :execrows
delete from app.users where tenant_id = $1 and id = $2;

-- name: RevokeUserSessions :execrows
update app.sessions set revoked_at = now(), revoked_reason = $3
where tenant_id = $1 and user_id = $2 and revoked_at is null;

-- name: ListAuditPage :many
-- A page of the tenant's audit events, newest first, before a cursor
-- (a seq), filtered by actor, action and time when given.
select * from app.audit_events
where tenant_id = sqlc.arg(tenant_id)
  and seq < sqlc.arg(before)
  and (sqlc.narg(actor)::uuid is null or actor_id = sqlc.narg(actor)::uuid)
  and (sqlc.arg(action)::text = '' or action = sqlc.arg(action)::text)
  and at >= sqlc.arg(since) and at < sqlc.arg(until)
order by seq desc
limit sqlc.arg(page_size);

-- name: SetRoleByEmail :one
update app.users set role = $3, updated_at = now()
where tenant_id = $1 and email = $2
returning *;

-- name: SetSessionCookie :exec
update app.sessions set cookie_hash = $3, csrf_hash = $4 where tenant_id = $1 and id = $2;

-- name: GetSessionByCookie :one
select * from app.sessions where tenant_id = $1 and cookie_hash = $2;

-- name: GetUserByEmail :one
select * from app.users where tenant_id = $1 and email = $2;

-- name: CreateAccountIfNew :one
-- Sign-up: creates the account unless the email has one (no row then).
insert into app.users (tenant_id, email, display_name, password_hash, role)
values ($1, $2, $3, $4, 'member')
on conflict (tenant_id, email) do nothing
returning *;

-- name: SetEmailVerified :one
-- Confirms the user's address, if it is still the one the token was sent
-- to; on an email change, the new address replaces the old.
update app.users set email = sqlc.arg(email), email_verified_at = now(), updated_at = now()
where tenant_id = sqlc.arg(tenant_id) and id = sqlc.arg(id)
returning *;

-- name: LockUser :one
-- Locks the account until commit: changes that spend its mailed tokens
-- take it first, so two of them queue instead of deadlocking.
select * from app.users where tenant_id = $1 and id = $2 for update;

-- name: ActiveAdmins :many
-- The tenant's active admins. (Admin changes of a tenant run one at a
-- time behind its audit chain's head, so a change that removes an admin
-- sees what the one before it left; locking the rows too would deadlock
-- with a sign-in, which locks its account and then the head.)
select id from app.users
where tenant_id = $1 and role = 'admin' and status = 'active'
order by id;

-- name: TakeOverUnconfirmedAccount :one
-- An operator's invitation of an address whose account was never
-- confirmed: the account becomes the invited admin's, without the
-- password whoever signed it up chose.
update app.users set password_hash = null, role = 'admin', status = 'active', display_name = $3, updated_at = now()
where tenant_id = $1 and email = $2 and email_verified_at is null
returning *;

-- name: GetLiveSession :one
-- The account of a session that stands: not revoked, its account active.
-- (Expiry is compared by the caller, whose clock tests can move.)
select sqlc.embed(u), s.expires_at as session_expires_at
from app.sessions s
join app.users u on u.tenant_id = s.tenant_id and u.id = s.user_id
where s.tenant_id = $1 and s.id = $2 and s.user_id = $3
  and s.revoked_at is null and u.status = 'active';

-- name: PeekRateLimit :one
-- A counter's hits without counting (0: none yet).
select coalesce((select r.hits from app.rate_limits r
                 where r.tenant_id = $1 and r.key = $2 and r.window_start = $3), 0)::integer as hits;

-- name: RefundRateLimit :exec
-- Gives one counted request back.
update app.rate_limits set hits = hits - 1
where tenant_id = $1 and key = $2 and window_start = $3 and hits > 0;

-- name: LockSignInAccount :one
-- The account a sign-in names, locked until commit: its sign-in clock
-- (locked_until) is read and moved in the same transaction, so that
-- concurrent attempts are counted one after the other.
select * from app.users where tenant_id = $1 and email = $2 for update;

-- name: SetSignInClock :exec
-- Moves the account's sign-in clock: attempts from client networks it
-- has not signed in from are refused until locked_until.
update app.users set locked_until = $3 where tenant_id = $1 and id = $2;

-- name: RefundSignInAttempt :exec
-- Gives an attempt back to the account's sign-in clock: it succeeded, or
-- its password was never checked.
update app.users set locked_until = locked_until - sqlc.arg(seconds)::integer * interval '1 second'
where tenant_id = sqlc.arg(tenant_id) and id = sqlc.arg(id);

-- name: SignedInFromNetwork :one
-- Whether the account started a session from a client network (an IPv4
-- address or an IPv6 /64) since a time.
select exists (
    select 1 from app.sessions
    where tenant_id = sqlc.arg(tenant_id) and user_id = sqlc.arg(user_id)
      and ip <<= sqlc.arg(network)::cidr and created_at > sqlc.arg(since)
) as known;

-- name: CountNetworkAttempt :one
-- Counts a password attempt on one account from one client network,
-- before the password is checked, unless the pair is throttled. The
-- attempts are counted in a rate-limit row under key whose window_start
-- is the first attempt of the window (one started after since, or a new
-- one now); the caller holds the account's row lock, so attempts on one
-- account are counted one after the other. A throttle is a row under
-- throttle_key whose window_start is when it ends and whose hits is how
-- many throttles in a row it is. Returns the window's attempts (0: not
-- counted, throttled) and start, and the pair's latest throttle (repeats
-- 0: none).
with throttle as (
    select l.window_start as until, l.hits as repeats
    from app.rate_limits l
    where l.tenant_id = sqlc.arg(tenant_id) and l.key = sqlc.arg(throttle_key)::text
    order by l.window_start desc
    limit 1
), open_window as (
    select w.window_start
    from app.rate_limits w
    where w.tenant_id = sqlc.arg(tenant_id) and w.key = sqlc.arg(key)::text and w.window_start > sqlc.arg(since)::timestamptz
    order by w.window_start desc
    limit 1
), hit as (
    insert into app.rate_limits (tenant_id, key, window_start, hits)
    select sqlc.arg(tenant_id)::uuid, sqlc.arg(key)::text,
           coalesce((select o.window_start from open_window o), sqlc.arg(now)::timestamptz), 1
    where not exists (select 1 from throttle where throttle.until > sqlc.arg(now)::timestamptz)
    on conflict (tenant_id, key, window_start) do update set hits = app.rate_limits.hits + 1
    returning hits, window_start
)
select coalesce((select h.hits from hit h), 0)::integer as attempts,
       coalesce((select h.window_start from hit h), 'epoch')::timestamptz as window_start,
       coalesce((select t.until from throttle t), 'epoch')::timestamptz as throttled_until,
       coalesce((select t.repeats from throttle t), 0)::integer as repeats;

-- name: ThrottleNetwork :exec
-- Throttles attempts on an account from a client network until
-- window_start; hits is how many throttles in a row this is.
insert into app.rate_limits (tenant_id, key, window_start, hits)
values ($1, $2, $3, $4)
on conflict (tenant_id, key, window_start) do nothing;

-- name: ClearNetworkFailures :exec
-- Forgets the attempts and throttles of an account from a client network.
delete from app.rate_limits
where tenant_id = $1 and key in (sqlc.arg(key)::text, sqlc.arg(throttle_key)::text);
