-- +goose NO TRANSACTION
-- +goose Up
-- Opt-in (URL option multi_region=true, CockroachDB only). A tenant's home
-- region is the part of its name before the first '/', e.g. tenant
-- "us-east1/acme" lives in us-east1. The region column is computed from the
-- primary key, so the optimizer knows every (tenant, namespace, key) maps to
-- exactly one region and needs no cross-region uniqueness probe.
ALTER TABLE idem_records ADD COLUMN IF NOT EXISTS crdb_region crdb_internal_region NOT VISIBLE NOT NULL
    AS (split_part(tenant, '/', 1)::crdb_internal_region) STORED;

-- +goose Down
ALTER TABLE idem_records DROP COLUMN IF EXISTS crdb_region;
