package cockroach

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/idemhq/idem/storage"
)

// TestExactBoundaries runs the statements at the instant a lease or a
// record ends: inside one transaction, whose now() does not move, a row is
// written to end at now() and the statement then reads it. A lease ending
// now has ended (takeover); a record ending now is absent for every
// operation, as storage.Record.Live says. The conformance suite cannot hit
// these instants on a database clock.
func TestExactBoundaries(t *testing.T) {
	ctx := testCtx(t)
	u := migratedURL(t, postgresURL(t))
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}
	// state, lease end and record end, each "now" or "later".
	insert := `INSERT INTO idem_records (tenant, namespace, idem_key, fingerprint, state, token, attempts, result, created_at, lease_expires_at, completed_at, expires_at)
		VALUES ('t', 'ns', 'k', 'fp', $1::INT4, 3, 3, CASE WHEN $1::INT4 = 2 THEN $4::BYTEA END, now() - interval '1 minute',
		CASE WHEN $2::BOOL THEN now() ELSE now() + interval '1 hour' END, CASE WHEN $1::INT4 = 2 THEN now() END,
		CASE WHEN $3::BOOL THEN now() ELSE now() + interval '1 hour' END)`
	res := resultBytes(&storage.Result{Body: []byte("r")})
	cp := encodeCheckpoint(&storage.Checkpoint{Phase: "p"})
	type answer struct {
		applied bool
		found   bool
		token   uint64
	}
	tests := []struct {
		name               string
		state              storage.State
		leaseEnds, recEnds bool
		sql                string
		args               []any // after offset and ID
		want               answer
	}{
		{"ReserveAtLeaseEnd", storage.StateInProgress, true, false, sqlReserve, []any{[]byte("fp"), int64(60e6), int64(60e6)}, answer{true, true, 4}},
		{"ReserveBeforeLeaseEnd", storage.StateInProgress, false, false, sqlReserve, []any{[]byte("fp"), int64(60e6), int64(60e6)}, answer{false, true, 3}},
		{"ReserveAtRecordEnd", storage.StateCompleted, true, true, sqlReserve, []any{[]byte("other"), int64(60e6), int64(60e6)}, answer{true, true, 1}},
		{"LookupAtRecordEnd", storage.StateCompleted, true, true, sqlLookup, nil, answer{}},
		{"CompleteAtRecordEnd", storage.StateInProgress, true, true, sqlComplete, []any{int64(3), res, int64(60e6)}, answer{false, true, 3}},
		{"CompleteAtLeaseEnd", storage.StateInProgress, true, false, sqlComplete, []any{int64(3), res, int64(60e6)}, answer{true, true, 3}},
		{"ExtendAtRecordEnd", storage.StateInProgress, true, true, sqlExtend, []any{int64(3), int64(60e6)}, answer{false, true, 3}},
		{"ReleaseAtRecordEnd", storage.StateInProgress, true, true, sqlRelease, []any{int64(3)}, answer{false, true, 3}},
		{"CheckpointAtRecordEnd", storage.StateInProgress, true, true, sqlCheckpoint, []any{int64(3), cp}, answer{false, true, 3}},
		{"ForceReleaseAtRecordEnd", storage.StateInProgress, true, true, sqlForceRelease, nil, answer{false, true, 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, insert, int32(tc.state), tc.leaseEnds, tc.recEnds, res); err != nil {
				t.Fatalf("insert: %v", err)
			}
			rows, err := tx.Query(ctx, tc.sql, append([]any{int64(0), id.Tenant, id.Namespace, id.Key}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			var got answer
			for rows.Next() {
				r, err := scanRow(rows, id, false)
				if err != nil {
					t.Fatal(err)
				}
				got = answer{r.applied, true, r.rec.Token}
				// The store decides in Go about a row the statement left:
				// it must be absent exactly when the record ends now.
				if !r.applied && r.rec.Live(r.now) == tc.recEnds {
					t.Errorf("row left as it was: Live() = %v at the statement's now, want %v", r.rec.Live(r.now), !tc.recEnds)
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("statement answered %+v, want %+v", got, tc.want)
			}
		})
	}
}
