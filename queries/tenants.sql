-- Control plane: tenants and their domains.

-- name: CreateTenant :one
insert into control.tenants (id, slug, name, placement, silo_ref, plan, signup)
values ($1, $2, $3, $4, $5, $6, $7)
returning *;

-- name: GetTenantByID :one
select * from control.tenants where id = $1;

-- name: GetTenantKeyGeneration :one
select key_generation from control.tenants where id = $1 and status <> 'deleted';

-- name: GetLiveTenantBySlug :one
select * from control.tenants where slug = $1 and status <> 'deleted';

-- name: GetLiveTenantByDomain :one
select t.* from control.tenants t
join control.tenant_domains d on d.tenant_id = t.id
where d.domain = $1 and d.verified_at is not null and t.status <> 'deleted';

-- name: ListLiveTenants :many
select * from control.tenants where status <> 'deleted' order by slug;

-- name: ListSiloTenants :many
select * from control.tenants
where placement = 'silo' and status <> 'deleted'
order by slug;

-- name: SetTenantStatus :one
update control.tenants set status = sqlc.arg(status), updated_at = now()
where id = sqlc.arg(id) and status = any(sqlc.arg(from_statuses)::text[])
returning *;

-- name: MarkTenantDeleted :one
update control.tenants set status = 'deleted', deleted_at = now(), updated_at = now()
where id = $1 and status <> 'deleted'
returning *;

-- name: AddTenantDomain :one
insert into control.tenant_domains (domain, tenant_id, verified_at)
values ($1, $2, now())
returning *;

-- name: RemoveTenantDomain :execrows
delete from control.tenant_domains where domain = $1 and tenant_id = $2;

-- name: RemoveAllTenantDomains :exec
delete from control.tenant_domains where tenant_id = $1;

-- name: ListTenantDomains :many
select * from control.tenant_domains where tenant_id = $1 order by domain;

-- name: SetTenantKeyGeneration :execrows
update control.tenants set key_generation = sqlc.arg(key_generation), updated_at = now()
where id = sqlc.arg(id) and key_generation = sqlc.arg(previous) and status <> 'deleted';

-- name: UpdateTenantSettings :one
-- Changes the settings given (null: unchanged); an empty string clears a
-- mail setting back to the server's default.
update control.tenants set
    signup                 = coalesce(sqlc.narg(signup), signup),
    require_verified_email = coalesce(sqlc.narg(require_verified_email), require_verified_email),
    access_token_ttl       = coalesce(sqlc.narg(access_token_ttl), access_token_ttl),
    mail_from_address      = case when sqlc.narg(mail_from_address)::text is null then mail_from_address else nullif(sqlc.narg(mail_from_address), '') end,
    mail_from_name         = case when sqlc.narg(mail_from_name)::text is null then mail_from_name else nullif(sqlc.narg(mail_from_name), '') end,
    mail_reply_to          = case when sqlc.narg(mail_reply_to)::text is null then mail_reply_to else nullif(sqlc.narg(mail_reply_to), '') end,
    link_base_url          = case when sqlc.narg(link_base_url)::text is null then link_base_url else nullif(sqlc.narg(link_base_url), '') end,
    updated_at             = now()
where id = sqlc.arg(id) and status <> 'deleted'
returning *;

-- name: TenantsToPurge :many
-- Tenants deleted before a time whose relationships may still be in
-- SpiceDB.
select id from control.tenants
where status = 'deleted' and relationships_purged_at is null and deleted_at < $1
order by deleted_at
limit 100;

-- name: MarkRelationshipsPurged :exec
update control.tenants set relationships_purged_at = now()
where id = $1 and status = 'deleted';

-- name: NotifyTenantChange :exec
-- Tells every server that a tenant changed, as the triggers on
-- control.tenants do (channel: tenancy.notifyChannel, payload: the id).
select pg_notify(sqlc.arg(channel), sqlc.arg(tenant_id));
