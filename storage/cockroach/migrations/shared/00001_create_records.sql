-- +goose Up
-- Types limited to those that mean the same on PostgreSQL and CockroachDB.
-- result and checkpoint hold idem's compact binary encoding.
CREATE TABLE IF NOT EXISTS idem_records (
    tenant           TEXT        NOT NULL,
    namespace        TEXT        NOT NULL,
    idem_key         TEXT        NOT NULL,
    fingerprint      BYTEA       NOT NULL,
    state            INT4        NOT NULL,
    token            BIGINT      NOT NULL,
    attempts         BIGINT      NOT NULL,
    result           BYTEA,
    checkpoint       BYTEA,
    created_at       TIMESTAMPTZ NOT NULL,
    lease_expires_at TIMESTAMPTZ NOT NULL,
    completed_at     TIMESTAMPTZ,
    expires_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, namespace, idem_key)
);

-- +goose Down
DROP TABLE IF EXISTS idem_records;
