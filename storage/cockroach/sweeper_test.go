package cockroach

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

func reserveN(t *testing.T, s *Store, prefix string, n int, retention time.Duration) []storage.ID {
	t.Helper()
	ids := make([]storage.ID, n)
	for i := range ids {
		ids[i] = storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprintf("%s-%04d", prefix, i)}
		if _, _, err := s.Reserve(testCtx(t), storage.ReserveParams{ID: ids[i], Fingerprint: []byte("fp"), LeaseTTL: time.Second, Retention: retention}); err != nil {
			t.Fatalf("Reserve() error = %v", err)
		}
	}
	return ids
}

func TestSweeper(t *testing.T) {
	ctx := testCtx(t)
	base := postgresURL(t)
	t.Run("RetriesSerializationFailure", func(t *testing.T) {
		// At REPEATABLE READ or SERIALIZABLE a sweep can lose a conflict
		// with a live writer; it must try again, not wait a whole interval.
		// A trigger fails the first DELETE as such a conflict would.
		u := migratedURL(t, base)
		s := openTest(t, u)
		defer s.Close()
		// A sequence, since the failed statement's writes roll back.
		execSQL(t, u, `CREATE SEQUENCE sweep_tries`)
		execSQL(t, u, `CREATE FUNCTION sweep_conflict() RETURNS trigger AS $$
BEGIN
	IF nextval('sweep_tries') = 1 THEN
		RAISE EXCEPTION 'conflict made by the test' USING ERRCODE = 'serialization_failure';
	END IF;
	RETURN OLD;
END $$ LANGUAGE plpgsql`)
		execSQL(t, u, `CREATE TRIGGER sweep_conflict BEFORE DELETE ON idem_records FOR EACH ROW EXECUTE FUNCTION sweep_conflict()`)
		reserveN(t, s, "old", 2, time.Hour)
		offsetClock{s}.Advance(2 * time.Hour)
		n, err := s.sweepOnce(ctx)
		if err != nil || n != 2 {
			t.Fatalf("sweepOnce() = %d, %v, want 2, nil after one serialization failure", n, err)
		}
		if tries := queryInt(t, u, `SELECT last_value FROM sweep_tries`); tries < 2 {
			t.Fatalf("the trigger ran %d times, want a failed try and another: the test proves nothing", tries)
		}
	})
	t.Run("BoundedBatches", func(t *testing.T) {
		u := migratedURL(t, base)
		s := openTest(t, u)
		defer s.Close()
		s.cfg.sweepBatch = 3
		expired := reserveN(t, s, "old", 7, time.Hour)
		live := reserveN(t, s, "new", 2, 3*time.Hour)
		revived := reserveN(t, s, "revived", 1, time.Hour)
		offsetClock{s}.Advance(2 * time.Hour)
		// A Reserve of an expired key replaces the row before the sweep; the
		// sweeper must not delete the new record.
		reserveN(t, s, "revived", 1, time.Hour)
		var got []int64
		for {
			n, err := s.sweepOnce(ctx)
			if err != nil {
				t.Fatalf("sweepOnce() error = %v", err)
			}
			got = append(got, n)
			if n == 0 {
				break
			}
		}
		if want := []int64{3, 3, 1, 0}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("sweepOnce() deleted %v, want %v", got, want)
		}
		if s.Swept() != 7 {
			t.Errorf("Swept() = %d, want 7", s.Swept())
		}
		if n := queryInt(t, u, `SELECT count(*) FROM idem_records`); n != 3 {
			t.Errorf("rows left = %d, want 3", n)
		}
		for _, id := range expired {
			if _, err := s.Lookup(ctx, id); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Lookup(%q) error = %v, want ErrNotFound", id.Key, err)
			}
		}
		for _, id := range append(live, revived...) {
			if _, err := s.Lookup(ctx, id); err != nil {
				t.Errorf("Lookup(%q) error = %v, want the live record", id.Key, err)
			}
		}
	})
	t.Run("EveryReplicaSweeps", func(t *testing.T) {
		u := migratedURL(t, base)
		replicas := []*Store{openTest(t, u), openTest(t, u), openTest(t, u)}
		for _, s := range replicas {
			defer s.Close()
			s.cfg.sweepBatch = 25
		}
		s0 := replicas[0]
		ids := make([]storage.ReserveParams, 300)
		for i := range ids {
			ids[i] = storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "many", Key: fmt.Sprintf("k%04d", i)}, Fingerprint: []byte("fp"), LeaseTTL: time.Second, Retention: time.Minute}
		}
		if _, err := s0.BatchReserve(ctx, ids); err != nil {
			t.Fatal(err)
		}
		for _, s := range replicas {
			offsetClock{s}.Advance(24 * time.Hour)
		}
		var wg sync.WaitGroup
		for _, s := range replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					n, err := s.sweepOnce(ctx)
					if err != nil {
						t.Errorf("sweepOnce() error = %v", err)
						return
					}
					if n == 0 {
						return
					}
				}
			}()
		}
		wg.Wait()
		var total uint64
		for _, s := range replicas {
			total += s.Swept()
		}
		if total != 300 {
			t.Errorf("replicas swept %d rows together, want 300", total)
		}
		if n := queryInt(t, u, `SELECT count(*) FROM idem_records WHERE namespace = 'many'`); n != 0 {
			t.Errorf("rows left = %d, want 0", n)
		}
	})
	t.Run("Background", func(t *testing.T) {
		u := migratedURL(t, base)
		s, err := Open(ctx, withParams(t, u, ParamSweepInterval, "20ms"), quiet)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		reserveN(t, s, "bg", 5, time.Minute)
		offsetClock{s}.Advance(time.Hour)
		for s.Swept() < 5 {
			select {
			case <-ctx.Done():
				t.Fatalf("Swept() = %d after waiting, want 5", s.Swept())
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
}
