-- +goose Up
-- Anchor the silo reference check (named tenants_check by 00002): the
-- tenant's own folder must come right after the mount, not anywhere in the
-- path, and the rest must be plain name characters, never . or ..
alter table control.tenants drop constraint tenants_check;
alter table control.tenants add constraint tenants_silo_ref_path
    check (silo_ref is null or (
        silo_ref ~ ('^vault:[A-Za-z0-9._-]+/tenants/' || id::text || '/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*#[A-Za-z0-9._-]+$')
        and silo_ref !~ '/\.\.?(/|#)'));

-- +goose Down
alter table control.tenants drop constraint tenants_silo_ref_path;
alter table control.tenants add constraint tenants_check
    check (silo_ref is null or silo_ref like 'vault:%/tenants/' || id::text || '/%');
