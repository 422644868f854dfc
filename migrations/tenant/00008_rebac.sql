-- +goose Up
-- Authorization: groups and custom roles as tenant admins see them (the
-- source of truth), the outbox that carries each change to SpiceDB, and
-- the consistency token of the tenant's latest delivered change.

create table app.groups (
    tenant_id   uuid        not null,
    id          uuid        not null default gen_random_uuid(),
    name        text        not null check (length(name) between 1 and 100),
    description text        not null default '' check (length(description) <= 500),
    created_at  timestamptz not null default now(),
    primary key (tenant_id, id),
    unique (tenant_id, name)
);

-- A group's members: users, or the members of another group (nested).
-- A manager may change the group's membership.
create table app.group_members (
    tenant_id   uuid        not null,
    group_id    uuid        not null,
    member_type text        not null check (member_type in ('user', 'group')),
    member_id   uuid        not null,
    manager     boolean     not null default false check (not manager or member_type = 'user'),
    created_at  timestamptz not null default now(),
    primary key (tenant_id, group_id, member_type, member_id),
    foreign key (tenant_id, group_id) references app.groups (tenant_id, id) on delete cascade
);
create index group_members_member on app.group_members (tenant_id, member_type, member_id);

-- A custom role carries tenant permissions to the users and groups it is
-- assigned to.
create table app.roles (
    tenant_id   uuid        not null,
    id          uuid        not null default gen_random_uuid(),
    name        text        not null check (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    description text        not null default '' check (length(description) <= 500),
    permissions text[]      not null check (permissions <@ array['manage_users', 'manage_roles', 'view_audit', 'manage_apps']),
    created_at  timestamptz not null default now(),
    primary key (tenant_id, id),
    unique (tenant_id, name)
);

create table app.role_assignments (
    tenant_id    uuid        not null,
    role_id      uuid        not null,
    subject_type text        not null check (subject_type in ('user', 'group')),
    subject_id   uuid        not null,
    created_at   timestamptz not null default now(),
    primary key (tenant_id, role_id, subject_type, subject_id),
    foreign key (tenant_id, role_id) references app.roles (tenant_id, id) on delete cascade
);
create index role_assignments_subject on app.role_assignments (tenant_id, subject_type, subject_id);

-- Relationship changes waiting for SpiceDB, written in the transaction of
-- the change they mirror and delivered in seq order per tenant; delivered
-- rows stay a week as a record. Ids are local: the relay adds the tenant
-- (rebac.ObjectID).
create table app.rebac_outbox (
    tenant_id        uuid        not null,
    seq              bigint      generated always as identity,
    op               text        not null check (op in ('touch', 'delete')),
    resource_type    text        not null check (length(resource_type) between 1 and 64),
    resource_id      text        not null check (length(resource_id) between 1 and 200),
    relation         text        not null check (length(relation) between 1 and 64),
    subject_type     text        not null check (length(subject_type) between 1 and 64),
    subject_id       text        not null check (length(subject_id) between 1 and 200),
    subject_relation text        not null default '' check (length(subject_relation) <= 64),
    created_at       timestamptz not null default now(),
    attempts         integer     not null default 0,
    next_attempt_at  timestamptz not null default now(),
    last_error       text        check (length(last_error) <= 500),
    delivered_at     timestamptz,
    primary key (tenant_id, seq)
);
create index rebac_outbox_pending on app.rebac_outbox (tenant_id, seq) where delivered_at is null;

-- One row per tenant: the token of its latest delivered change, which
-- checks made for its requests wait for (no new-enemy problem). Its row
-- lock also keeps two relays from delivering a tenant's changes at once.
create table app.rebac_state (
    tenant_id    uuid        not null primary key,
    zedtoken     text        not null default '' check (length(zedtoken) <= 1000),
    delivered_at timestamptz
);

-- +goose StatementBegin
do $$
declare t text;
begin
    foreach t in array array['groups', 'group_members', 'roles', 'role_assignments', 'rebac_outbox', 'rebac_state'] loop
        execute format('alter table app.%I enable row level security', t);
        execute format('alter table app.%I force row level security', t);
        execute format($p$create policy tenant_isolation on app.%I
            using (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)$p$, t);
    end loop;
end
$$;
-- +goose StatementEnd
grant select, insert, update, delete on app.groups, app.group_members, app.roles, app.role_assignments,
    app.rebac_outbox, app.rebac_state to gatehouse_app;

-- +goose Down
drop table app.rebac_state, app.rebac_outbox, app.role_assignments, app.roles, app.group_members, app.groups;
