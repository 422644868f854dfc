-- +goose Up
-- The write fence of placement moves. Every tenant transaction enters its
-- tenant's fence first, in the batch that opens it (tenancy.DB): a shared
-- advisory lock, which a move takes exclusively to stop the tenant's
-- writes for the moment of its flip; and a check that the tenant has not
-- moved away from this database. Not in schema app: the fence belongs to
-- a database and must not travel with the tenant's rows.
create schema if not exists fence;
grant usage on schema fence to gatehouse_app;

-- Tenants whose data lives elsewhere now: their transactions here fail.
create table fence.moved_away (
    tenant_id uuid        primary key,
    move_id   uuid        not null,
    moved_at  timestamptz not null default now()
);
grant select on fence.moved_away to gatehouse_app;

create function fence.key(tenant uuid) returns bigint
language sql immutable parallel safe
as $$ select hashtextextended(tenant::text, 7261) $$;

-- enter waits up to max_wait while a move holds the tenant's fence (a
-- waiting exclusive lock turns new shared requests away, so in-flight
-- transactions drain while new ones wait here), then fails with GH001;
-- GH002 when the tenant has moved away.
-- +goose StatementBegin
create function fence.enter(tenant uuid, max_wait interval) returns void
language plpgsql
as $$
declare
    deadline timestamptz := clock_timestamp() + max_wait;
begin
    while not pg_try_advisory_xact_lock_shared(fence.key(tenant)) loop
        if clock_timestamp() >= deadline then
            raise exception 'tenant % is fenced for a move', tenant using errcode = 'GH001';
        end if;
        perform pg_sleep(0.002);
    end loop;
    if exists (select 1 from fence.moved_away where tenant_id = tenant) then
        raise exception 'tenant % has moved to another database', tenant using errcode = 'GH002';
    end if;
end;
$$;
-- +goose StatementEnd

-- +goose Down
drop schema fence cascade;
