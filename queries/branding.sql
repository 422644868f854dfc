-- A tenant's branding of its hosted pages. Every query runs inside
-- tenancy.DB.Tx.

-- name: GetBranding :one
select tenant_id, display_name, primary_color, terms_url, privacy_url, logo_type, updated_at
from app.branding where tenant_id = $1;

-- name: SetBranding :one
insert into app.branding (tenant_id, display_name, primary_color, terms_url, privacy_url)
values ($1, $2, $3, $4, $5)
on conflict (tenant_id) do update set display_name = excluded.display_name, primary_color = excluded.primary_color,
    terms_url = excluded.terms_url, privacy_url = excluded.privacy_url, updated_at = now()
returning tenant_id, display_name, primary_color, terms_url, privacy_url, logo_type, updated_at;

-- name: SetLogo :exec
insert into app.branding (tenant_id, logo, logo_type)
values ($1, $2, $3)
on conflict (tenant_id) do update set logo = excluded.logo, logo_type = excluded.logo_type, updated_at = now();

-- name: GetLogo :one
select logo, logo_type, updated_at from app.branding where tenant_id = $1 and logo is not null;
