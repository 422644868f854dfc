-- +goose Up
-- The app role advances audit chain heads but never deletes one: a
-- deleted head would restart the chain at 1 and make every audited write
-- fail.
revoke delete on app.audit_heads from gatehouse_app;

-- +goose Down
grant delete on app.audit_heads to gatehouse_app;
