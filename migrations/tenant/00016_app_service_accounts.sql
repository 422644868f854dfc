-- +goose Up
-- Machine apps are service accounts: roles are assigned to them as to
-- users and groups, and a role's permissions reach them through app:*
-- wildcards beside the user:* ones. Queue those wildcards for the roles
-- that exist (row level security is lifted on app.roles for this
-- transaction only; each tenant's outbox rows go in under its own
-- setting, as migration 00013 does).
alter table app.role_assignments drop constraint role_assignments_subject_type_check;
alter table app.role_assignments add constraint role_assignments_subject_type_check
    check (subject_type in ('user', 'group', 'app'));

alter table app.roles no force row level security;
-- +goose StatementBegin
do $$
declare t uuid;
begin
    for t in select distinct tenant_id from app.roles where cardinality(permissions) > 0 loop
        perform set_config('gatehouse.tenant_id', t::text, true);
        insert into app.rebac_outbox (tenant_id, op, resource_type, resource_id, relation, subject_type, subject_id)
        select r.tenant_id, 'touch', 'role', r.id::text, p, 'app', '*'
        from app.roles r, unnest(r.permissions) p
        where r.tenant_id = t;
    end loop;
    perform set_config('gatehouse.tenant_id', '', true);
end
$$;
-- +goose StatementEnd
alter table app.roles force row level security;

-- +goose Down
delete from app.role_assignments where subject_type = 'app';
alter table app.role_assignments drop constraint role_assignments_subject_type_check;
alter table app.role_assignments add constraint role_assignments_subject_type_check
    check (subject_type in ('user', 'group'));
