-- +goose Up
-- How a tenant's hosted pages look: the name they show, an uploaded logo
-- (PNG, JPEG or WebP, at most 256 KiB; served by Gatehouse), a primary
-- colour, and links to the tenant's terms and privacy pages.
create table app.branding (
    tenant_id     uuid        not null primary key,
    display_name  text        check (length(display_name) between 1 and 100),
    primary_color text        check (primary_color ~ '^#[0-9a-f]{6}$'),
    terms_url     text        check (length(terms_url) <= 2000),
    privacy_url   text        check (length(privacy_url) <= 2000),
    logo          bytea       check (length(logo) <= 262144),
    logo_type     text        check (logo_type in ('image/png', 'image/jpeg', 'image/webp')),
    updated_at    timestamptz not null default now(),
    check ((logo is null) = (logo_type is null))
);
alter table app.branding enable row level security;
alter table app.branding force row level security;
create policy tenant_isolation on app.branding
    using (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)
    with check (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid);
grant select, insert, update, delete on app.branding to gatehouse_app;

-- +goose Down
drop table app.branding;
