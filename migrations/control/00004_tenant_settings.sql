-- +goose Up
-- Per-tenant identity settings.
alter table control.tenants
    add column signup                 text    not null default 'open' check (signup in ('open', 'invite')),
    add column require_verified_email boolean not null default false,
    add column access_token_ttl       integer not null default 900 check (access_token_ttl between 60 and 86400); -- seconds

-- +goose Down
alter table control.tenants drop column signup, drop column require_verified_email, drop column access_token_ttl;
