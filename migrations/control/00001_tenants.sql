-- +goose Up
create schema if not exists control;
grant usage on schema control to gatehouse_app;

-- Tenants are the unit of isolation. A deleted tenant keeps its row as a
-- tombstone (its data is gone), which frees the slug for reuse.
create table control.tenants (
    id             uuid        primary key,
    slug           text        not null check (slug ~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$'),
    name           text        not null check (length(name) between 1 and 200),
    status         text        not null default 'active'
                               check (status in ('active', 'suspended', 'moving', 'deleted')),
    placement      text        not null default 'shared' check (placement in ('shared', 'silo')),
    -- Where a silo tenant's database lives: a connection URL without a
    -- password. Credentials come from configuration, never from this table.
    silo_location  text        check (silo_location is null or silo_location !~ '://[^/@]*:[^/@]*@'),
    plan           text        not null default 'free',
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    deleted_at     timestamptz,
    check ((placement = 'silo') = (silo_location is not null)),
    check ((status = 'deleted') = (deleted_at is not null))
);
create unique index tenants_live_slug on control.tenants (slug) where status <> 'deleted';

-- Custom domains a tenant is reachable on besides <slug>.<base domain>.
create table control.tenant_domains (
    domain      text        primary key check (domain = lower(domain) and length(domain) <= 253),
    tenant_id   uuid        not null references control.tenants (id) on delete cascade,
    verified_at timestamptz,
    created_at  timestamptz not null default now()
);
create index tenant_domains_tenant on control.tenant_domains (tenant_id);

grant select on control.tenants, control.tenant_domains to gatehouse_app;

-- Every change to a tenant or its domains is announced on channel
-- gatehouse_tenants with the tenant id as payload, so every server instance
-- drops its cached resolution at once (see tenancy.Resolver).
-- +goose StatementBegin
create function control.notify_tenant_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        perform pg_notify('gatehouse_tenants', old.tenant_id::text);
        return old;
    end if;
    if tg_table_name = 'tenants' then
        perform pg_notify('gatehouse_tenants', new.id::text);
    else
        perform pg_notify('gatehouse_tenants', new.tenant_id::text);
        if tg_op = 'UPDATE' and old.tenant_id <> new.tenant_id then
            perform pg_notify('gatehouse_tenants', old.tenant_id::text);
        end if;
    end if;
    return new;
end;
$$;
-- +goose StatementEnd

create trigger tenants_notify after insert or update on control.tenants
    for each row execute function control.notify_tenant_change();
create trigger tenant_domains_notify after insert or update or delete on control.tenant_domains
    for each row execute function control.notify_tenant_change();

-- +goose Down
drop schema control cascade;
