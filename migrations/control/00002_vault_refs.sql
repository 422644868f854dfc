-- +goose Up
-- Silo connection details move into Vault: the control plane keeps only a
-- reference, which must point under the tenant's own secret path. Each
-- tenant also records the generation of its Transit key (a tenant that
-- brings its own key starts a new generation; see secrets.KeyName).
-- +goose StatementBegin
do $$
begin
    if exists (select 1 from control.tenants where silo_location is not null and status <> 'deleted') then
        raise exception 'live silo tenants record a database location outside Vault: delete them with the previous version of gatehouse before upgrading';
    end if;
end
$$;
-- +goose StatementEnd
alter table control.tenants drop column silo_location;
alter table control.tenants
    add column silo_ref text
        check (silo_ref is null or silo_ref like 'vault:%/tenants/' || id::text || '/%'),
    add column key_generation smallint not null default 1 check (key_generation >= 1),
    add constraint tenants_silo_ref check (status = 'deleted' or (placement = 'silo') = (silo_ref is not null));

-- +goose Down
alter table control.tenants
    drop column silo_ref,
    drop column key_generation,
    add column silo_location text;
