-- Platform operators' API tokens, in the control plane.

-- name: CreateOperatorToken :exec
insert into control.operator_tokens (name, token_hash) values ($1, $2);

-- name: UseOperatorToken :one
-- The operator a token belongs to, noting its use.
update control.operator_tokens set last_used_at = now()
where token_hash = $1
returning name;

-- name: DeleteOperatorToken :execrows
delete from control.operator_tokens where name = $1;

-- name: ListOperatorTokens :many
select name, created_at, last_used_at from control.operator_tokens order by name;
