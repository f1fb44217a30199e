-- +goose NO TRANSACTION
-- +goose Up
-- Row-level TTL deletes expired rows in the background. Reads already treat
-- them as absent (expires_at > now()), so the job's delay is harmless.
ALTER TABLE idem_records SET (ttl_expiration_expression = 'expires_at', ttl_job_cron = '*/5 * * * *');

-- +goose Down
ALTER TABLE idem_records RESET (ttl_expiration_expression, ttl_job_cron);
