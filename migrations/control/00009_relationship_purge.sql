-- +goose Up
-- A deleted tenant's relationships in SpiceDB go too: every server's
-- relay removes them (SpiceDB is no part of a Postgres transaction) and
-- records it here, so the work survives a crash and is done once.
alter table control.tenants add column relationships_purged_at timestamptz;
grant update (relationships_purged_at) on control.tenants to gatehouse_app;

-- +goose Down
revoke update (relationships_purged_at) on control.tenants from gatehouse_app;
alter table control.tenants drop column relationships_purged_at;
