-- +goose Up
-- Per-tenant mail settings. Null means the server's default: the From
-- address configured with --mail-from under the tenant's name, and links
-- to the tenant's own Gatehouse host.
alter table control.tenants
    add column mail_from_address text check (mail_from_address is null or
        (length(mail_from_address) <= 254 and mail_from_address ~ '^[^@\s<>",]+@[^@\s<>",]+\.[^@\s<>",]+$')),
    add column mail_from_name    text check (mail_from_name is null or
        (length(mail_from_name) between 1 and 100 and mail_from_name !~ '[\r\n]')),
    add column mail_reply_to     text check (mail_reply_to is null or
        (length(mail_reply_to) <= 254 and mail_reply_to ~ '^[^@\s<>",]+@[^@\s<>",]+\.[^@\s<>",]+$')),
    -- Where the links in mails point: the tenant's app, which shows a
    -- page and posts the token to Gatehouse's API.
    add column link_base_url     text check (link_base_url is null or
        (length(link_base_url) <= 500 and link_base_url ~ '^https?://[^\s]+$'));

-- +goose Down
alter table control.tenants drop column mail_from_address, drop column mail_from_name,
    drop column mail_reply_to, drop column link_base_url;
