-- Platform operators' API tokens, and what operators did with them, in
-- the control plane.

-- name: CreateOperatorToken :exec
insert into control.operator_tokens (name, token_hash, scopes, expires_at) values ($1, $2, $3, $4);

-- name: UseOperatorToken :one
-- The operator a token belongs to, with its scopes and expiry, noting its
-- use if it is live (an expired token's use is no use).
update control.operator_tokens
set last_used_at = case when expires_at > now() then now() else last_used_at end
where token_hash = $1
returning name, scopes, expires_at, expires_at <= now() as expired;

-- name: DeleteOperatorToken :execrows
delete from control.operator_tokens where name = $1;

-- name: ListOperatorTokens :many
select name, scopes, created_at, expires_at, last_used_at from control.operator_tokens order by name;

-- name: RecordOperatorAction :exec
insert into control.operator_actions (operator, action, tenant_id, tenant_slug, move_id)
values ($1, $2, $3, $4, $5);

-- name: OperatorActionsOnMove :many
-- What operators did to one move, oldest first.
select at, operator, action from control.operator_actions where move_id = $1 order by id;
