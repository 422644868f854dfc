-- OpenID Connect apps and their client secrets. Every query runs inside
-- tenancy.DB.Tx; times that decide a secret's validity come from the
-- caller, whose clock tests can move.

-- name: CreateApp :one
insert into app.oidc_apps (
    tenant_id, id, client_id, name, kind, token_endpoint_auth_method, redirect_uris, post_logout_redirect_uris,
    grant_types, scopes, access_token_ttl, first_party, id_token_alg, jwks, disabled, created_at, updated_at
) values (
    sqlc.arg(tenant_id), sqlc.arg(id), sqlc.arg(client_id), sqlc.arg(name), sqlc.arg(kind),
    sqlc.arg(token_endpoint_auth_method), sqlc.arg(redirect_uris)::text[], sqlc.arg(post_logout_redirect_uris)::text[],
    sqlc.arg(grant_types)::text[], sqlc.arg(scopes)::text[], sqlc.narg(access_token_ttl), sqlc.arg(first_party),
    sqlc.arg(id_token_alg), sqlc.narg(jwks), sqlc.arg(disabled), sqlc.arg(at), sqlc.arg(at)
)
returning *;

-- name: GetApp :one
select * from app.oidc_apps where tenant_id = $1 and id = $2;

-- name: LockApp :one
-- The app, locked until commit: a change or rotation reads what it
-- changes.
select * from app.oidc_apps where tenant_id = $1 and id = $2 for update;

-- name: GetAppByClientID :one
select * from app.oidc_apps where tenant_id = $1 and client_id = $2;

-- name: ListApps :many
select * from app.oidc_apps where tenant_id = $1 order by name, created_at, id;

-- name: CountApps :one
select count(*) from app.oidc_apps where tenant_id = $1;

-- name: UpdateApp :one
-- Writes an app's changeable settings (the service merges a change into
-- the stored app and checks the whole).
update app.oidc_apps set
    name                      = sqlc.arg(name),
    redirect_uris             = sqlc.arg(redirect_uris)::text[],
    post_logout_redirect_uris = sqlc.arg(post_logout_redirect_uris)::text[],
    grant_types               = sqlc.arg(grant_types)::text[],
    scopes                    = sqlc.arg(scopes)::text[],
    access_token_ttl          = sqlc.narg(access_token_ttl),
    first_party               = sqlc.arg(first_party),
    id_token_alg              = sqlc.arg(id_token_alg),
    jwks                      = sqlc.narg(jwks),
    disabled                  = sqlc.arg(disabled),
    updated_at                = sqlc.arg(at)
where tenant_id = sqlc.arg(tenant_id) and id = sqlc.arg(id)
returning *;

-- name: DeleteApp :execrows
delete from app.oidc_apps where tenant_id = $1 and id = $2;

-- name: AddAppSecret :exec
insert into app.oidc_app_secrets (tenant_id, app_id, secret_hash, created_at) values ($1, $2, $3, $4);

-- name: DropReplacedAppSecrets :exec
-- A rotation keeps at most the secret it replaces: any older one goes.
delete from app.oidc_app_secrets where tenant_id = $1 and app_id = $2 and expires_at is not null;

-- name: DropAppSecrets :exec
delete from app.oidc_app_secrets where tenant_id = $1 and app_id = $2;

-- name: ExpireCurrentAppSecret :execrows
update app.oidc_app_secrets set expires_at = sqlc.arg(expires_at)
where tenant_id = sqlc.arg(tenant_id) and app_id = sqlc.arg(app_id) and expires_at is null;

-- name: ListAppSecrets :many
-- The secrets of the tenant's apps (of one app, if app_id is set) still
-- valid at the given time, newest first; hashes stay in the database.
select app_id, id, created_at, expires_at from app.oidc_app_secrets
where tenant_id = sqlc.arg(tenant_id)
  and (sqlc.narg(app_id)::uuid is null or app_id = sqlc.narg(app_id)::uuid)
  and (expires_at is null or expires_at > sqlc.arg(at)::timestamptz)
order by app_id, created_at desc;

-- name: ClientSecretsOf :many
-- The secrets a client may authenticate with, and until when: none for an
-- unknown client or an app without secrets (public, or private_key_jwt).
-- (Whether the app is disabled is the caller's to check.)
select s.secret_hash, s.expires_at from app.oidc_apps a
join app.oidc_app_secrets s on s.tenant_id = a.tenant_id and s.app_id = a.id
where a.tenant_id = $1 and a.client_id = $2
  and a.token_endpoint_auth_method in ('client_secret_basic', 'client_secret_post');
