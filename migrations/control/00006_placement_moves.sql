-- +goose Up
-- Placement moves: each promotion of a tenant to a silo database, and each
-- demotion back to the shared one, with the phase it has reached and its
-- timings (tenancy.Mover). One process drives a move at a time: it holds
-- an advisory lock on the move for as long as it runs, so a move whose
-- lock is free and whose state is running was interrupted and may be
-- resumed or aborted from what this row records. Nothing here is secret:
-- databases are named by references into the secret store.
create table control.placement_moves (
    id               uuid        primary key,
    tenant_id        uuid        not null references control.tenants (id),
    direction        text        not null check (direction in ('promote', 'demote')),
    -- Who started it: an operator's name, or the system user of a CLI run.
    started_by       text        not null check (length(started_by) between 1 and 100),
    -- running: being driven, or interrupted; failed: stopped on an error,
    -- to be resumed or aborted; aborting: being rolled back (only abort
    -- may go on); retiring: flipped, the old copy kept until
    -- retire_after; done and aborted are final.
    state            text        not null default 'running'
                                 check (state in ('running', 'failed', 'aborting', 'retiring', 'done', 'aborted')),
    phase            text        not null default 'start'
                                 check (phase in ('start', 'target', 'copy', 'catch_up', 'verify', 'switch',
                                                  'cleanup', 'retire', 'done')),
    -- Secret references of the silo the tenant leaves (demotion) or goes
    -- to (promotion).
    source_ref       text        check (source_ref is null or source_ref like 'vault:%/tenants/' || tenant_id::text || '/%'),
    target_ref       text        check (target_ref is null or target_ref like 'vault:%/tenants/' || tenant_id::text || '/%'),
    -- The target's subscription, once made: leftover table-copy slots on
    -- the source are named after it.
    subscription_oid bigint,
    max_pause_ms     integer     not null check (max_pause_ms between 10 and 60000),
    keep_old_for     interval    not null check (keep_old_for >= '0 s'),
    -- Tables with their rows: counted on the source as the copy starts,
    -- then as verified on both sides.
    tables           jsonb       not null default '{}',
    lag_bytes        bigint,
    -- The longest any write of the tenant waited at the fence, and how
    -- often the fence was raised (one raise that outlasts max_pause is
    -- lifted and tried again).
    pause_ms         double precision,
    fence_attempts   integer     not null default 0,
    -- Marks the move wrote into the tenant's data (app.move_marks).
    marks            integer     not null default 0,
    error            text        check (length(error) <= 2000),
    started_at       timestamptz not null default now(),
    copied_at        timestamptz,
    verified_at      timestamptz,
    flipped_at       timestamptz,
    retire_after     timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz not null default now(),
    check ((state in ('done', 'aborted')) = (finished_at is not null)),
    check ((flipped_at is not null) = (phase in ('cleanup', 'retire', 'done')))
);
-- A tenant makes one move at a time; a retiring one does not count (the
-- next move retires it first).
create unique index placement_moves_one_at_a_time on control.placement_moves (tenant_id)
    where state in ('running', 'failed', 'aborting');
create index placement_moves_tenant on control.placement_moves (tenant_id, started_at desc);

-- +goose Down
drop table control.placement_moves;
