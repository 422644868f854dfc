-- +goose Up
-- A third outbox operation: forget removes every relationship of the apps'
-- resources whose subject is the row's subject (a deleted user), whatever
-- the resource and relation; resource_id and relation hold '*'.
alter table app.rebac_outbox drop constraint rebac_outbox_op_check;
alter table app.rebac_outbox add constraint rebac_outbox_op_check check (op in ('touch', 'delete', 'forget'));

-- +goose Down
delete from app.rebac_outbox where op = 'forget';
alter table app.rebac_outbox drop constraint rebac_outbox_op_check;
alter table app.rebac_outbox add constraint rebac_outbox_op_check check (op in ('touch', 'delete'));
