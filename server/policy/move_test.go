package policy

import (
	"context"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
)

// TestMoveNamespaceStartsEmpty pins what a reload moving a namespace to
// another store does to its keys, as README.md and docs/operations.md say:
// nothing is migrated. A completed key runs again; a key held across the
// move is reserved anew in the new store, and its holder's Complete
// answers NOT_FOUND. The old store keeps its records, and Stats counts
// only the store the namespace is routed to: one row per state.
func TestMoveNamespaceStartsEmpty(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	// "m.*" starts on idemd's own store, which stays open after the move.
	writePolicy(t, path, "namespaces:\n  m.*: {}\n")
	f := serve(t, path, server.DefaultLimits())
	if err := reserveComplete(ctx, f.client, "m.x", "done", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	held, err := f.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "m.x", Key: "held", Fingerprint: []byte("fp")})
	if err != nil {
		t.Fatal(err)
	}

	writePolicy(t, path, "namespaces:\n  m.*:\n    store: "+pebbleURL(filepath.Join(dir, "new"))+"\n")
	if err := f.r.Reload(ctx); err != nil {
		t.Fatal(err)
	}

	// The holder from before the move finds no record in the new store.
	_, err = f.client.Complete(ctx, &idemv1.CompleteRequest{Namespace: "m.x", Key: "held", Token: held.GetRecord().GetToken(), Result: &idemv1.Result{}})
	if status.Code(err) != codes.NotFound {
		t.Errorf("the holder's Complete after the move = %v, want NOT_FOUND", err)
	}
	// Retries are reserved anew, and run their command again.
	for _, key := range []string{"done", "held"} {
		res, err := f.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "m.x", Key: key, Fingerprint: []byte("fp")})
		if err != nil || res.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || res.GetRecord().GetToken() != 1 {
			t.Errorf("Reserve(%s) after the move = %v token %d, %v; want RESERVED with token 1 (not migrated)",
				key, res.GetOutcome(), res.GetRecord().GetToken(), err)
		}
	}
	// The old store still has both records.
	for key, want := range map[string]storage.State{"done": storage.StateCompleted, "held": storage.StateInProgress} {
		rec, err := lookup(ctx, f.base, "m.x", key)
		if err != nil || rec.State != want {
			t.Errorf("old store after the move: %s = %v, %v; want %v (kept, not moved)", key, rec, err, want)
		}
	}

	// Stats over all namespaces: the new store's records only, one row
	// per (namespace, state).
	st, err := f.admin.Stats(ctx, &idemv1.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int64{}
	for _, row := range st.GetRows() {
		k := row.GetNamespace() + "/" + row.GetState().String()
		if _, dup := seen[k]; dup {
			t.Errorf("Stats() has two rows for %s: %v", k, st.GetRows())
		}
		seen[k] = row.GetCount()
	}
	if got := seen["m.x/"+idemv1.RecordState_RECORD_STATE_COMPLETED.String()]; got != 0 {
		t.Errorf("Stats() counts %d completed m.x records; want 0 (the completed one is in the old store, which m.x no longer reaches)", got)
	}
	if got := seen["m.x/"+idemv1.RecordState_RECORD_STATE_IN_PROGRESS.String()]; got != 2 {
		t.Errorf("Stats() counts %d in-progress m.x records; want 2 (the new store's): %v", got, st.GetRows())
	}
	one, err := f.admin.Stats(ctx, &idemv1.StatsRequest{Namespace: "m.x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(one.GetRows()) != 1 || one.GetRows()[0].GetCount() != 2 {
		t.Errorf("Stats(m.x) = %v, want the same one row as Stats() gives m.x", one.GetRows())
	}
}
