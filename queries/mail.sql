-- Email flows: mailed single-use tokens and the mail outbox. Every query
-- runs inside tenancy.DB.Tx.

-- name: CreateEmailToken :exec
insert into app.email_tokens (tenant_id, token_hash, user_id, purpose, email, expires_at)
values ($1, $2, $3, $4, $5, $6);

-- name: PeekEmailToken :one
-- A token that may still be spent, without spending it.
select * from app.email_tokens
where tenant_id = $1 and token_hash = $2 and purpose = any(sqlc.arg(purposes)::text[])
  and used_at is null and expires_at > now();

-- name: SpendEmailToken :one
-- Spends a token: of concurrent spends of one token exactly one returns it.
update app.email_tokens set used_at = now()
where tenant_id = $1 and token_hash = $2 and purpose = any(sqlc.arg(purposes)::text[])
  and used_at is null and expires_at > now()
returning *;

-- name: SpendUserEmailTokens :exec
-- Spends the user's other open tokens of these purposes: once a password
-- is reset, older reset mails must not work.
update app.email_tokens set used_at = now()
where tenant_id = $1 and user_id = $2 and purpose = any(sqlc.arg(purposes)::text[]) and used_at is null;

-- name: PruneEmailTokens :exec
delete from app.email_tokens
where tenant_id = $1 and user_id = $2 and (used_at is not null or expires_at <= now());

-- name: EnqueueMail :exec
insert into app.mail_outbox (tenant_id, id, kind, payload_sealed, user_id)
values ($1, $2, $3, $4, $5);

-- name: ClaimMail :many
-- Claims up to lim due mails for lease seconds: a relay that dies while
-- sending leaves them to be claimed again when the lease ends.
update app.mail_outbox o
set attempts = o.attempts + 1, next_attempt_at = now() + make_interval(secs => sqlc.arg(lease)::float8)
where (o.tenant_id, o.id) in (
    select d.tenant_id, d.id from app.mail_outbox d
    where d.tenant_id = sqlc.arg(tenant_id) and d.status = 'pending' and d.next_attempt_at <= now()
    order by d.next_attempt_at
    limit sqlc.arg(lim)
    for update skip locked)
returning o.id, o.kind, o.payload_sealed, o.attempts;

-- name: MarkMailSent :exec
update app.mail_outbox
set status = 'sent', payload_sealed = null, done_at = now(), last_error = null
where tenant_id = $1 and id = $2 and status = 'pending';

-- name: RetryMail :exec
update app.mail_outbox
set next_attempt_at = now() + make_interval(secs => sqlc.arg(delay)::float8), last_error = sqlc.arg(last_error)
where tenant_id = sqlc.arg(tenant_id) and id = sqlc.arg(id) and status = 'pending';

-- name: FailMail :exec
-- Gives up on a mail: the payload is wiped, the row stays as a record.
update app.mail_outbox
set status = 'failed', payload_sealed = null, done_at = now(), last_error = sqlc.arg(last_error)
where tenant_id = sqlc.arg(tenant_id) and id = sqlc.arg(id) and status = 'pending';

-- name: PruneMail :execrows
delete from app.mail_outbox
where tenant_id = $1 and status <> 'pending' and done_at < $2;

-- name: UnclaimMail :exec
-- Gives a claimed mail back without counting the attempt (a dependency
-- of ours, not the SMTP server, failed), to be tried after delay.
update app.mail_outbox
set attempts = greatest(attempts - 1, 0), next_attempt_at = now() + make_interval(secs => sqlc.arg(delay)::float8),
    last_error = sqlc.arg(last_error)
where tenant_id = sqlc.arg(tenant_id) and id = sqlc.arg(id) and status = 'pending';

-- name: HasDueMail :one
-- The mail relay's probe (tenancy.DB.Which, HasDueMailProbe): does the
-- tenant have mail to send now?
select exists (select 1 from app.mail_outbox
    where tenant_id = $1 and status = 'pending' and next_attempt_at <= now());
