package cockroach

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// TestRetryAfterRowsKeepsNoRows: a statement may fail with a retryable
// error after the database already sent some of its rows (CockroachDB
// streams results past its buffer and then reports a retry error;
// PostgreSQL reports serialization failures at commit, after RETURNING
// rows). The retried statement's answer must be its own, not the rows of
// the failed try followed by the rows of the new one. A view in front of
// the table raises 40001 once, at the third row List reads; List's plan is
// held to an index scan in key order, so the first two rows are sent
// before it.
func TestRetryAfterRowsKeepsNoRows(t *testing.T) {
	ctx := testCtx(t)
	s := openTest(t, withParams(t, migratedURL(t, postgresURL(t)), "enable_sort", "off", "enable_seqscan", "off"))
	defer s.Close()
	var keys []string
	for i := range 5 {
		id := storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprint("k", i)}
		if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, id.Key)
	}
	for _, stmt := range []string{
		`ALTER TABLE idem_records RENAME TO idem_records_table`,
		`CREATE INDEX ON idem_records_table (tenant, namespace, idem_key COLLATE "C")`,
		`CREATE SEQUENCE idem_test_rows`,
		`CREATE FUNCTION idem_test_fail_once() RETURNS BOOLEAN VOLATILE LANGUAGE plpgsql AS $$
		BEGIN
			IF nextval('idem_test_rows') = 3 THEN
				RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = '40001';
			END IF;
			RETURN true;
		END $$`,
		`CREATE VIEW idem_records AS SELECT * FROM idem_records_table WHERE idem_test_fail_once()`,
	} {
		if _, err := s.pool.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	recs, more, err := s.List(ctx, storage.ListParams{Tenant: "t", Namespace: "ns", Limit: 4})
	if err != nil {
		t.Fatalf("List() error = %v, want nil", err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Key)
	}
	if !slices.Equal(got, keys[:4]) || !more {
		t.Fatalf("List() = %q, more %v; want %q, more true", got, more, keys[:4])
	}
	var failed int64
	if err := s.pool.QueryRow(ctx, `SELECT last_value FROM idem_test_rows`).Scan(&failed); err != nil || failed < 3 {
		t.Fatalf("the injected failure did not fire (%d rows read, %v): nothing was checked", failed, err)
	}
}
