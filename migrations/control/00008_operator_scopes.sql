-- +goose Up
-- Operator tokens get scopes and an expiry, and what operators do through
-- the operator API is recorded.
--
-- Scopes: read (follow moves), move (promote, demote, resume, abort) and
-- retire (remove a moved tenant's old copy, by force too). Every token
-- expires. Tokens made before could do everything and never expired: they
-- keep their three scopes, so nothing that uses them breaks on upgrade,
-- and expire 90 days from now, the default lifetime of a new token, so
-- that none lives forever.
alter table control.operator_tokens
    add column scopes     text[],
    add column expires_at timestamptz;
update control.operator_tokens
set scopes = '{read,move,retire}', expires_at = now() + interval '90 days';
alter table control.operator_tokens
    alter column scopes set not null,
    alter column expires_at set not null,
    add constraint operator_tokens_scopes
        check (cardinality(scopes) between 1 and 3 and scopes <@ '{read,move,retire}'::text[]);

-- Operators' actions through the operator API, each written before the
-- action is carried out (an action that cannot be recorded is not
-- carried out); the move's own row tells how it went. There is no
-- foreign key: the record outlives the tenant, the move and the token.
create table control.operator_actions (
    id          bigint      generated always as identity primary key,
    at          timestamptz not null default now(),
    -- The name of the operator token the request came with.
    operator    text        not null check (length(operator) between 1 and 63),
    action      text        not null check (action in ('promote', 'demote', 'resume', 'abort', 'retire', 'force_retire')),
    tenant_id   uuid        not null,
    tenant_slug text        not null,
    move_id     uuid        not null
);
create index operator_actions_move on control.operator_actions (move_id, id);
create index operator_actions_tenant on control.operator_actions (tenant_id, id);

-- +goose Down
drop table control.operator_actions;
alter table control.operator_tokens
    drop column scopes,
    drop column expires_at;
