-- +goose Up
-- Browser sessions: the session cookie carries an opaque token and every
-- state-changing request a CSRF token; the database keeps only their
-- SHA-256 hashes.
alter table app.sessions
    add column cookie_hash bytea check (cookie_hash is null or length(cookie_hash) = 32),
    add column csrf_hash   bytea check (csrf_hash is null or length(csrf_hash) = 32);
create unique index sessions_cookie on app.sessions (tenant_id, cookie_hash) where cookie_hash is not null;

-- +goose Down
drop index app.sessions_cookie;
alter table app.sessions drop column cookie_hash, drop column csrf_hash;
