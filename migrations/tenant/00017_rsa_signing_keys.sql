-- +goose Up
-- Tenants sign with RS256 too, for the apps that ask for it
-- (id_token_signed_response_alg): an RSA key per tenant beside its Ed25519
-- one, sealed alike, published in the same JWKS, rotated alike. The
-- public key is the raw Ed25519 key or the RSA key's PKIX DER.
alter table app.signing_keys drop constraint signing_keys_algorithm_check;
alter table app.signing_keys drop constraint signing_keys_public_key_check;
alter table app.signing_keys add constraint signing_keys_algorithm_check
    check (algorithm in ('EdDSA', 'RS256'));
alter table app.signing_keys add constraint signing_keys_public_key_check
    check ((algorithm = 'EdDSA' and length(public_key) = 32)
        or (algorithm = 'RS256' and length(public_key) between 256 and 1024));

-- +goose Down
delete from app.signing_keys where algorithm = 'RS256';
alter table app.signing_keys drop constraint signing_keys_algorithm_check;
alter table app.signing_keys drop constraint signing_keys_public_key_check;
alter table app.signing_keys add constraint signing_keys_algorithm_check check (algorithm = 'EdDSA');
alter table app.signing_keys add constraint signing_keys_public_key_check check (length(public_key) = 32);
