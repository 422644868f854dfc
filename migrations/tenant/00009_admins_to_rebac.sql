-- +goose Up
-- Admin rights are decided by SpiceDB now: queue each existing admin's
-- tenant#admin relationship. Row level security applies to this
-- migration's role too, so each tenant's rows go in under its own setting.
-- +goose StatementBegin
do $$
declare t uuid;
begin
    for t in select distinct tenant_id from app.users where role = 'admin' loop
        perform set_config('gatehouse.tenant_id', t::text, true);
        insert into app.rebac_outbox (tenant_id, op, resource_type, resource_id, relation, subject_type, subject_id)
        select tenant_id, 'touch', 'tenant', 'tenant', 'admin', 'user', id::text
        from app.users where tenant_id = t and role = 'admin';
    end loop;
    perform set_config('gatehouse.tenant_id', '', true);
end
$$;
-- +goose StatementEnd

-- +goose Down
-- Nothing to undo: the relationships mirror the role column.
