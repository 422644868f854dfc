-- +goose Up
-- Email flows: single-use tokens mailed to users, and the outbox their
-- mails wait in until an SMTP server has taken them.

-- A token is 256 random bits; only its SHA-256 hash is stored. email is
-- the address it was sent to: for verify_email the address the user
-- proves to own (the new one, on an email change).
create table app.email_tokens (
    tenant_id  uuid        not null,
    token_hash bytea       not null check (length(token_hash) = 32),
    user_id    uuid        not null,
    purpose    text        not null check (purpose in ('verify_email', 'reset_password', 'invite')),
    email      text        not null check (length(email) between 3 and 320),
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    used_at    timestamptz,
    primary key (tenant_id, token_hash),
    foreign key (tenant_id, user_id) references app.users (tenant_id, id) on delete cascade
);
create index email_tokens_user on app.email_tokens (tenant_id, user_id, purpose);

-- Mail to send, written in the same transaction as the change it tells
-- of. The message (recipient, subject, bodies with their links) is sealed
-- under the tenant's key and wiped once it is sent or given up on, so a
-- token in it exists in plain text only on its way to the SMTP server.
-- next_attempt_at doubles as the lease of a relay that claimed the row.
create table app.mail_outbox (
    tenant_id       uuid        not null,
    id              uuid        not null,
    kind            text        not null check (length(kind) between 1 and 50),
    payload_sealed  bytea,
    status          text        not null default 'pending' check (status in ('pending', 'sent', 'failed')),
    attempts        integer     not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error      text        check (length(last_error) <= 500),
    created_at      timestamptz not null default now(),
    done_at         timestamptz,
    primary key (tenant_id, id),
    check ((status = 'pending') = (payload_sealed is not null)),
    check ((status = 'pending') = (done_at is null))
);
create index mail_outbox_due on app.mail_outbox (tenant_id, next_attempt_at) where status = 'pending';
create index mail_outbox_done on app.mail_outbox (tenant_id, done_at) where status <> 'pending';

-- +goose StatementBegin
do $$
declare t text;
begin
    foreach t in array array['email_tokens', 'mail_outbox'] loop
        execute format('alter table app.%I enable row level security', t);
        execute format('alter table app.%I force row level security', t);
        execute format($p$create policy tenant_isolation on app.%I
            using (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)$p$, t);
    end loop;
end
$$;
-- +goose StatementEnd
grant select, insert, update, delete on app.email_tokens, app.mail_outbox to gatehouse_app;

-- +goose Down
drop table app.mail_outbox, app.email_tokens;
