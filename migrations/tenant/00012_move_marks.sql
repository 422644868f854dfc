-- +goose Up
-- A placement move writes numbered marks into the tenant's data: while
-- its fence holds the tenant's writes (the tenant's last change before the
-- flip), and before, to time how far behind the target is. Logical
-- replication applies changes in commit order, so once the target shows a
-- mark it holds every change the tenant made before it.
create table app.move_marks (
    tenant_id uuid        not null,
    move_id   uuid        not null,
    n         integer     not null check (n > 0),
    marked_at timestamptz not null default now(),
    primary key (tenant_id, move_id, n)
);
alter table app.move_marks enable row level security;
alter table app.move_marks force row level security;
create policy tenant_isolation on app.move_marks
    using (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)
    with check (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid);
-- Moves write marks as an administrator; the server may read and write
-- them as it may any tenant data, its tenant's only.
grant select, insert, update, delete on app.move_marks to gatehouse_app;

-- How long a tenant's transactions wait at its fence before they are
-- refused: set by the move that raises it (its --max-pause), read only
-- by a transaction that finds the fence raised.
create table fence.holds (
    tenant_id uuid     primary key,
    max_wait  interval not null check (max_wait > '0 s' and max_wait <= '60 s')
);
grant select on fence.holds to gatehouse_app;

-- +goose StatementBegin
create or replace function fence.enter(tenant uuid, max_wait interval) returns void
language plpgsql
as $$
declare
    deadline timestamptz;
begin
    while not pg_try_advisory_xact_lock_shared(fence.key(tenant)) loop
        if deadline is null then
            deadline := clock_timestamp() + coalesce((select h.max_wait from fence.holds h where h.tenant_id = tenant), max_wait);
        elsif clock_timestamp() >= deadline then
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
drop table fence.holds;
drop table app.move_marks;
