-- Authorization: groups, roles and the relationship outbox. Every query
-- runs inside tenancy.DB.Tx.

-- name: CreateGroup :one
insert into app.groups (tenant_id, name, description) values ($1, $2, $3) returning *;

-- name: GetGroup :one
select * from app.groups where tenant_id = $1 and id = $2;

-- name: ListGroups :many
select * from app.groups where tenant_id = $1 order by name;

-- name: UpdateGroup :one
update app.groups set
    name        = coalesce(sqlc.narg(name), name),
    description = coalesce(sqlc.narg(description), description)
where tenant_id = sqlc.arg(tenant_id) and id = sqlc.arg(id)
returning *;

-- name: DeleteGroup :execrows
delete from app.groups where tenant_id = $1 and id = $2;

-- name: AddGroupMember :execrows
-- Adds a member, or changes whether it manages the group; no row when
-- nothing changed.
insert into app.group_members (tenant_id, group_id, member_type, member_id, manager)
values ($1, $2, $3, $4, $5)
on conflict (tenant_id, group_id, member_type, member_id) do update set manager = excluded.manager
where app.group_members.manager <> excluded.manager;

-- name: GetGroupMember :one
select * from app.group_members where tenant_id = $1 and group_id = $2 and member_type = $3 and member_id = $4;

-- name: RemoveGroupMember :one
delete from app.group_members where tenant_id = $1 and group_id = $2 and member_type = $3 and member_id = $4
returning *;

-- name: ListGroupMembers :many
select * from app.group_members where tenant_id = $1 and group_id = $2 order by member_type desc, created_at;

-- name: GroupsContaining :many
-- Groups that directly contain the member.
select group_id, manager from app.group_members where tenant_id = $1 and member_type = $2 and member_id = $3;

-- name: CreateRole :one
insert into app.roles (tenant_id, name, description, permissions) values ($1, $2, $3, $4) returning *;

-- name: GetRole :one
select * from app.roles where tenant_id = $1 and id = $2;

-- name: ListRoles :many
select * from app.roles where tenant_id = $1 order by name;

-- name: UpdateRole :one
update app.roles set
    description = coalesce(sqlc.narg(description), description),
    permissions = coalesce(sqlc.narg(permissions)::text[], permissions)
where tenant_id = sqlc.arg(tenant_id) and id = sqlc.arg(id)
returning *;

-- name: DeleteRole :one
delete from app.roles where tenant_id = $1 and id = $2 returning *;

-- name: AssignRole :execrows
insert into app.role_assignments (tenant_id, role_id, subject_type, subject_id)
values ($1, $2, $3, $4) on conflict do nothing;

-- name: UnassignRole :execrows
delete from app.role_assignments where tenant_id = $1 and role_id = $2 and subject_type = $3 and subject_id = $4;

-- name: ListRoleAssignments :many
select * from app.role_assignments where tenant_id = $1 and role_id = $2 order by created_at;

-- name: AssignmentsOf :many
-- Roles assigned directly to the subject, with their permissions.
select r.id, r.name, r.permissions from app.role_assignments a
join app.roles r on r.tenant_id = a.tenant_id and r.id = a.role_id
where a.tenant_id = $1 and a.subject_type = $2 and a.subject_id = $3;

-- name: GroupMembershipsOfGroups :many
-- Every group-in-group edge of the tenant, for walking nested membership.
select group_id, member_id from app.group_members where tenant_id = $1 and member_type = 'group';

-- name: EnqueueRelationship :exec
insert into app.rebac_outbox (tenant_id, op, resource_type, resource_id, relation, subject_type, subject_id, subject_relation)
values ($1, $2, $3, $4, $5, $6, $7, $8);

-- name: LockRebacState :one
-- Takes the tenant's delivery lock until commit (creating its state row
-- on first use): a second relay waits, then finds the changes delivered.
insert into app.rebac_state (tenant_id) values ($1)
on conflict (tenant_id) do update set tenant_id = excluded.tenant_id
returning *;

-- name: DueRelationships :many
-- The tenant's oldest undelivered changes, in order, when the oldest is
-- due (or now, forced): a change that failed waits for its retry, and so
-- does everything after it (order matters: a touch then a delete must
-- not swap).
select * from app.rebac_outbox o
where o.tenant_id = sqlc.arg(tenant_id) and o.delivered_at is null
  and (sqlc.arg(force)::boolean or (select min(d.next_attempt_at) from app.rebac_outbox d
       where d.tenant_id = sqlc.arg(tenant_id) and d.delivered_at is null) <= now())
order by o.seq
limit sqlc.arg(lim);

-- name: DeliveredRelationships :exec
update app.rebac_outbox set delivered_at = now(), last_error = null
where tenant_id = $1 and seq <= $2 and delivered_at is null;

-- name: PruneRelationships :exec
delete from app.rebac_outbox where tenant_id = $1 and delivered_at < $2;

-- name: SetZedToken :exec
update app.rebac_state set zedtoken = $2, delivered_at = now() where tenant_id = $1;

-- name: RetryRelationships :exec
update app.rebac_outbox set attempts = attempts + 1, last_error = sqlc.arg(last_error),
    next_attempt_at = now() + make_interval(secs => sqlc.arg(delay)::float8)
where tenant_id = sqlc.arg(tenant_id) and seq = sqlc.arg(seq);


-- name: ListAdmins :many
select id from app.users where tenant_id = $1 and role = 'admin';

-- name: ListAllGroupMembers :many
select * from app.group_members where tenant_id = $1;

-- name: ListAllRoleAssignments :many
select * from app.role_assignments where tenant_id = $1;

-- name: RebacFreshness :one
-- What a check needs in one statement: the tenant's latest token, and
-- whether changes still wait for delivery.
select coalesce((select zedtoken from app.rebac_state s where s.tenant_id = $1), '')::text as zedtoken,
       exists (select 1 from app.rebac_outbox o where o.tenant_id = $1 and o.delivered_at is null) as pending;

-- name: LockGroupGraph :exec
-- Serialises changes to which groups a tenant's groups contain, until
-- commit: two additions that would each close half of a loop (G1 into
-- G2, G2 into G1) cannot both pass the check for loops. Advisory, so it
-- blocks nothing else; keyed by tenant, so tenants never wait for each
-- other.
select pg_advisory_xact_lock(hashtextextended('gatehouse.group_graph/' || sqlc.arg(tenant_id)::uuid::text, 0));

-- name: ListDisabledUsers :many
select id from app.users where tenant_id = $1 and status = 'disabled';

-- name: HasDueChanges :one
-- The relationship relay's probe (tenancy.DB.Which, HasDueChangesProbe):
-- has the tenant changes to deliver now?
select exists (select 1 from app.rebac_outbox
    where tenant_id = $1 and delivered_at is null and next_attempt_at <= now());
