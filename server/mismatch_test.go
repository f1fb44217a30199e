package server

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// A MISMATCH answer goes to a caller with a different payload: it must not
// carry the other request's checkpoint data, as it does not carry its result.
// TestMismatchDoesNotLeakCheckpoint: a MISMATCH answer goes to a request
// other than the record's; like the result, the state its holder saved
// with Checkpoint stays out of it.
func TestMismatchDoesNotLeakCheckpoint(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", Fingerprint: []byte("A")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: testNS, Key: "k", Token: 1, Phase: "charged", Data: []byte("card=4111")}); err != nil {
		t.Fatal(err)
	}
	r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", Fingerprint: []byte("B"), Wait: durationpb.New(time.Second)})
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH {
		t.Fatalf("Reserve(B) = %v, %v, want MISMATCH", r, err)
	}
	if cp := r.GetRecord().GetCheckpoint(); cp != nil {
		t.Errorf("MISMATCH answer carries the other request's checkpoint %q/%q", cp.GetPhase(), cp.GetData())
	}
	b, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, Items: []*idemv1.BatchReserveRequest_Item{{Key: "k", Fingerprint: []byte("B")}}})
	if err != nil {
		t.Fatal(err)
	}
	if cp := b.GetResults()[0].GetRecord().GetCheckpoint(); cp != nil {
		t.Errorf("BatchReserve MISMATCH carries the other request's checkpoint %q/%q", cp.GetPhase(), cp.GetData())
	}
}
