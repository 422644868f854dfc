-- +goose Up
-- Platform operators' API tokens (the operator API: moves of tenants).
-- Only a token's SHA-256 hash is kept: tokens are 256 random bits, so a
-- plain hash is as good as a slow one, and a lookup costs one index probe.
create table control.operator_tokens (
    name         text        primary key check (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    token_hash   bytea       not null unique check (length(token_hash) = 32),
    created_at   timestamptz not null default now(),
    last_used_at timestamptz
);

-- +goose Down
drop table control.operator_tokens;
