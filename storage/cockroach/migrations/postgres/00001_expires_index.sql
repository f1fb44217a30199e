-- +goose Up
-- The sweeper finds expired rows through this index. CockroachDB has no
-- sweeper (row-level TTL instead), and a timestamp index would be a write
-- hotspot there, so this is PostgreSQL-only.
CREATE INDEX IF NOT EXISTS idem_records_expires_at ON idem_records (expires_at);

-- +goose Down
DROP INDEX IF EXISTS idem_records_expires_at;
