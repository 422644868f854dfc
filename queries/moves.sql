-- Placement moves (tenancy.Mover), in the control plane. The mover runs
-- as an administrator.

-- name: CreateMove :one
insert into control.placement_moves (id, tenant_id, direction, started_by, source_ref, max_pause_ms, keep_old_for)
values ($1, $2, $3, $4, $5, $6, $7)
returning *;

-- name: GetMove :one
select * from control.placement_moves where id = $1;

-- name: ListMoves :many
-- The latest moves, of one tenant or of all.
select * from control.placement_moves
where sqlc.narg(tenant_id)::uuid is null or tenant_id = sqlc.narg(tenant_id)::uuid
order by started_at desc
limit sqlc.arg(max_rows);

-- name: SaveMove :one
-- Records a move's progress; its identity and settings never change.
update control.placement_moves set
    state            = sqlc.arg(state),
    phase            = sqlc.arg(phase),
    target_ref       = sqlc.narg(target_ref),
    subscription_oid = sqlc.narg(subscription_oid),
    tables           = sqlc.arg(tables),
    lag_bytes        = sqlc.narg(lag_bytes),
    pause_ms         = sqlc.narg(pause_ms),
    fence_attempts   = sqlc.arg(fence_attempts),
    marks            = sqlc.arg(marks),
    error            = sqlc.narg(error),
    copied_at        = sqlc.narg(copied_at),
    verified_at      = sqlc.narg(verified_at),
    flipped_at       = sqlc.narg(flipped_at),
    retire_after     = sqlc.narg(retire_after),
    finished_at      = sqlc.narg(finished_at),
    updated_at       = now()
where id = sqlc.arg(id)
returning *;

-- name: RetiringMoves :many
-- Flipped moves still keeping the tenant's old copy: of one tenant, or
-- (tenant_id null) every one whose grace period is over.
select * from control.placement_moves
where state = 'retiring' and (
    (sqlc.narg(tenant_id)::uuid is not null and tenant_id = sqlc.narg(tenant_id)::uuid)
    or (sqlc.narg(tenant_id)::uuid is null and retire_after <= now()))
order by retire_after;

-- name: PlaceTenant :one
-- A move's flip: the tenant now lives at placement, and is active again.
update control.tenants set placement = $2, silo_ref = $3, status = 'active', updated_at = now()
where id = $1 and status = 'moving'
returning *;

-- name: TryLockMove :one
-- Takes a move's lock (see tenancy.moveLockKey) for the session unless
-- another session holds it; the session keeps it until it ends.
select pg_try_advisory_lock(hashtextextended(sqlc.arg(lock_key), 0));
