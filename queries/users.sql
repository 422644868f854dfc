-- Tenant data: users. Every query here runs inside tenancy.DB.Tx, where row
-- level security limits it to the transaction's tenant; the explicit
-- tenant_id predicates keep plans on the (tenant_id, ...) indexes.

-- name: CreateUser :one
insert into app.users (tenant_id, email, display_name)
values ($1, $2, $3)
returning *;

-- name: GetUser :one
select * from app.users where tenant_id = $1 and id = $2;

-- name: ListUsers :many
select * from app.users where tenant_id = $1 order by email limit $2;

-- name: CountUsers :one
select count(*) from app.users where tenant_id = $1;
