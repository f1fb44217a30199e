-- +goose NO TRANSACTION
-- +goose Up
-- Rows live in their tenant's home region; the primary index becomes
-- (crdb_region, tenant, namespace, idem_key).
ALTER TABLE idem_records SET LOCALITY REGIONAL BY ROW AS crdb_region;

-- +goose Down
ALTER TABLE idem_records SET LOCALITY REGIONAL BY TABLE IN PRIMARY REGION;
