package cockroach

import (
	"errors"
	"testing"

	"github.com/idemhq/idem/storage"
)

// TestDeleteDamagedWaitsForCommit: Delete answers a damaged row's removal
// without a record, but only once its statement committed. The row comes
// back in the RETURNING before the commit, which can still fail (a
// serialization failure at commit, a deferred constraint); answering at
// the row said "removed" of a row the rollback kept, and skipped the retry
// that would have removed it. A deferred trigger fails the first commit
// with 40001.
func TestDeleteDamagedWaitsForCommit(t *testing.T) {
	ctx := testCtx(t)
	s := openTest(t, migratedURL(t, postgresURL(t)))
	defer s.Close()
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}
	pgHarness.Damage(ctx, t, s, id)
	for _, stmt := range []string{
		`CREATE SEQUENCE idem_test_commits`,
		`CREATE FUNCTION idem_test_fail_commit_once() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF nextval('idem_test_commits') = 1 THEN
				RAISE EXCEPTION 'injected serialization failure at commit' USING ERRCODE = '40001';
			END IF;
			RETURN NULL;
		END $$`,
		`CREATE CONSTRAINT TRIGGER idem_test_at_commit AFTER DELETE ON idem_records
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION idem_test_fail_commit_once()`,
	} {
		if _, err := s.pool.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if rec, err := s.Delete(ctx, id); err != nil || rec != nil {
		t.Fatalf("Delete() of the damaged record = %+v, %v; want it removed, answered without a record", rec, err)
	}
	if _, err := s.Lookup(ctx, id); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Lookup() after Delete() answered nil error = %v, want ErrNotFound (the delete was rolled back)", err)
	}
	var fired int64
	if err := s.pool.QueryRow(ctx, `SELECT last_value FROM idem_test_commits`).Scan(&fired); err != nil || fired < 2 {
		t.Errorf("the commit trigger fired %d times (%v), want the failed commit and its retry", fired, err)
	}
}
