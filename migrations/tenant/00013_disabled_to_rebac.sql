-- +goose Up
-- A disabled account holds no right of its tenant: SpiceDB learns which
-- accounts are disabled (tenant#disabled) and subtracts them from every
-- tenant permission. Queue that relationship for each account disabled
-- before now, and (again: touches are idempotent) each admin's
-- tenant#admin, which migration 00009 meant to queue but could not see:
-- row level security is forced on the owner this runs as, and without a
-- tenant setting it reads no rows. So app.users is read here with the
-- policy lifted for this transaction only, and each tenant's outbox rows
-- go in under its own setting.
alter table app.users no force row level security;
-- +goose StatementBegin
do $$
declare t uuid;
begin
    for t in select distinct tenant_id from app.users where status = 'disabled' or role = 'admin' loop
        perform set_config('gatehouse.tenant_id', t::text, true);
        insert into app.rebac_outbox (tenant_id, op, resource_type, resource_id, relation, subject_type, subject_id)
        select tenant_id, 'touch', 'tenant', 'tenant', 'disabled', 'user', id::text
        from app.users where tenant_id = t and status = 'disabled'
        union all
        select tenant_id, 'touch', 'tenant', 'tenant', 'admin', 'user', id::text
        from app.users where tenant_id = t and role = 'admin';
    end loop;
    perform set_config('gatehouse.tenant_id', '', true);
end
$$;
-- +goose StatementEnd
alter table app.users force row level security;

-- +goose Down
-- Nothing to undo: the relationships mirror the status and role columns.
