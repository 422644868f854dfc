-- The move fence and a move's marks (tenancy.Fence, tenancy.Replication),
-- on a tenant database, shared or silo. A move runs them as an
-- administrator, outside the tenant's fence (migrations/tenant 00011 and
-- 00012).

-- name: AddMoveMark :exec
insert into app.move_marks (tenant_id, move_id, n) values ($1, $2, $3)
on conflict do nothing;

-- name: MoveMarkArrived :one
select exists (select 1 from app.move_marks where tenant_id = $1 and move_id = $2 and n = $3);

-- name: DeleteMoveMarks :exec
delete from app.move_marks where tenant_id = $1 and move_id = $2;

-- name: SetFenceWait :exec
-- How long the tenant's transactions wait at its fence once it is raised.
insert into fence.holds (tenant_id, max_wait) values (sqlc.arg(tenant_id), make_interval(secs => sqlc.arg(max_wait_secs)))
on conflict (tenant_id) do update set max_wait = excluded.max_wait;

-- name: LockFence :exec
-- Raises the tenant's fence: a session lock, held until UnlockFence or
-- the session's end; the wait for it is bounded by the session's
-- lock_timeout.
select pg_advisory_lock(fence.key(sqlc.arg(tenant_id)));

-- name: UnlockFence :one
select pg_advisory_unlock(fence.key(sqlc.arg(tenant_id)));

-- name: MarkMovedAway :exec
-- The tenant's data lives elsewhere now: its transactions here fail
-- (fence.enter raises GH002).
insert into fence.moved_away (tenant_id, move_id) values ($1, $2)
on conflict (tenant_id) do update set move_id = excluded.move_id, moved_at = now();

-- name: WelcomeBack :exec
-- Undoes MarkMovedAway: the tenant's transactions run here again.
delete from fence.moved_away where tenant_id = $1;

-- name: ForgetFenceWait :exec
-- Undoes SetFenceWait (the tenant is deleted).
delete from fence.holds where tenant_id = $1;
