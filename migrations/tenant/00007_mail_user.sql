-- +goose Up
-- A mail belongs to the account it is about: deleting the account deletes
-- its mail (pending mail holds the address, sealed), with the rest of its
-- personal data.
alter table app.mail_outbox
    add column user_id uuid,
    add foreign key (tenant_id, user_id) references app.users (tenant_id, id) on delete cascade;
create index mail_outbox_user on app.mail_outbox (tenant_id, user_id);

-- +goose Down
alter table app.mail_outbox drop column user_id;
