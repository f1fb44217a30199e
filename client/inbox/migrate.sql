CREATE TABLE IF NOT EXISTS idem_inbox (
	consumer     TEXT        NOT NULL,
	msg_id       TEXT        NOT NULL,
	processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, msg_id)
);
CREATE INDEX IF NOT EXISTS idem_inbox_processed_at ON idem_inbox (processed_at);
