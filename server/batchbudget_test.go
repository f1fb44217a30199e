package server

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
)

// bigBody is a result body close to the default 1 MiB limit: five of them
// are past a BatchReserve answer's budget.
var bigBody = bytes.Repeat([]byte{'r'}, 1000<<10)

func completeKey(ctx context.Context, t *testing.T, e *testEnv, key string, body []byte) {
	t.Helper()
	r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: key, Fingerprint: []byte("fp")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: key, Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: body}}); err != nil {
		t.Fatal(err)
	}
}

// completeBig completes keys with bigBody and returns the bytes size says
// their records take in an answer, and the last record.
func completeBig(ctx context.Context, t *testing.T, e *testEnv, keys []string, size func(*storage.Record) int) (used int, last *storage.Record) {
	t.Helper()
	for _, k := range keys {
		completeKey(ctx, t, e, k, bigBody)
		var err error
		if last, err = e.store.Lookup(ctx, storageID(k)); err != nil {
			t.Fatal(err)
		}
		used += size(last)
	}
	return used, last
}

func wantBudgetSpent(t *testing.T, key string, r *idemv1.BatchReserveResponse_Result, budget int) {
	t.Helper()
	if c := codes.Code(r.GetError().GetCode()); c != codes.ResourceExhausted {
		t.Errorf("%s: item error code = %v (outcome %v), want ResourceExhausted", key, c, r.GetOutcome())
		return
	}
	msg := r.GetError().GetMessage()
	if !strings.Contains(msg, fmt.Sprintf("%d-byte budget is spent", budget)) || !strings.Contains(msg, "Reserve or Lookup this key on its own") {
		t.Errorf("%s: item error message = %q, want it to name the %d-byte budget and Reserve or Lookup", key, msg, budget)
	}
	if r.GetRecord() != nil {
		t.Errorf("%s: item answered with an error also carries a record", key)
	}
}

// A BatchReserve answer is bounded: the records that changed nothing
// (COMPLETED, IN_PROGRESS, MISMATCH) share the budget in request order, an
// item past it gets RESOURCE_EXHAUSTED instead of its record, and RESERVED
// items are answered wherever they stand. The records left out are unchanged.
func TestBatchReserveAnswerBudget(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	budget := answerBytes(e.svc.Limits())
	for i := range 6 {
		completeKey(ctx, t, e, fmt.Sprint("c", i), bigBody)
	}
	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "busy", Fingerprint: []byte("fp")}); err != nil {
		t.Fatal(err)
	}
	completeKey(ctx, t, e, "other", []byte("small"))
	before := map[string]*storage.Record{}
	for _, k := range []string{"c4", "c5", "busy", "other"} {
		before[k], _ = e.store.Lookup(ctx, storageID(k))
	}

	keys := []string{"c0", "c1", "fresh-a", "c2", "c3", "c4", "busy", "c5", "fresh-b", "other"}
	var items []*idemv1.BatchReserveRequest_Item
	for _, k := range keys {
		fp := []byte("fp")
		if k == "other" {
			fp = []byte("another request") // MISMATCH
		}
		items = append(items, &idemv1.BatchReserveRequest_Item{Key: k, Fingerprint: fp})
	}
	resp, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, Items: items})
	if err != nil {
		t.Fatalf("BatchReserve() error = %v", err)
	}
	if n := proto.Size(resp); n > budget {
		t.Errorf("answer is %d bytes, want at most the %d-byte budget", n, budget)
	}
	res := resp.GetResults()
	for i, k := range keys {
		r := res[i]
		switch k {
		case "c0", "c1", "c2", "c3":
			if r.GetError() != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED || !bytes.Equal(r.GetRecord().GetResult().GetBody(), bigBody) {
				t.Errorf("%s: %v %v, want COMPLETED with its whole result", k, r.GetOutcome(), r.GetError())
			}
		case "fresh-a", "fresh-b":
			if r.GetError() != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || r.GetRecord().GetToken() != 1 {
				t.Errorf("%s: %v %v, want RESERVED with its token", k, r.GetOutcome(), r.GetError())
			}
		case "c4", "c5":
			wantBudgetSpent(t, k, r, budget)
		case "busy":
			// Small records still fit after a large one did not.
			if r.GetError() != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS {
				t.Errorf("%s: %v %v, want IN_PROGRESS", k, r.GetOutcome(), r.GetError())
			}
		case "other":
			if r.GetError() != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH {
				t.Errorf("%s: %v %v, want MISMATCH", k, r.GetOutcome(), r.GetError())
			}
		}
	}
	for k, rec := range before {
		after, err := e.store.Lookup(ctx, storageID(k))
		if err != nil {
			t.Fatal(err)
		}
		assertUnchanged(t, []*storage.Record{rec}, []*storage.Record{after})
	}
}

// RESERVED items carry the token of a reservation just made: they are
// answered in full even when they alone are past the budget (takeovers
// carrying large checkpoints), and the budget they use is gone for the rest.
func TestBatchReserveAnswersEveryReservation(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	budget := answerBytes(e.svc.Limits())
	var items []*idemv1.BatchReserveRequest_Item
	completeKey(ctx, t, e, "done", []byte("small"))
	items = append(items, &idemv1.BatchReserveRequest_Item{Key: "done", Fingerprint: []byte("fp")})
	for i := range 5 {
		key := fmt.Sprint("t", i)
		r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: key, Fingerprint: []byte("fp")})
		if err != nil {
			t.Fatal(err)
		}
		tok := r.GetRecord().GetToken()
		if _, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: testNS, Key: key, Token: tok, Phase: "p", Data: bigBody}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.idem.Release(ctx, &idemv1.ReleaseRequest{Namespace: testNS, Key: key, Token: tok}); err != nil {
			t.Fatal(err)
		}
		items = append(items, &idemv1.BatchReserveRequest_Item{Key: key, Fingerprint: []byte("fp")})
	}
	resp, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, Items: items})
	if err != nil {
		t.Fatalf("BatchReserve() error = %v", err)
	}
	res := resp.GetResults()
	wantBudgetSpent(t, "done", res[0], budget)
	for i, r := range res[1:] {
		if r.GetError() != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || r.GetRecord().GetToken() != 2 || !bytes.Equal(r.GetRecord().GetCheckpoint().GetData(), bigBody) {
			t.Errorf("t%d: %v %v token %d, want RESERVED (takeover, token 2) with its checkpoint", i, r.GetOutcome(), r.GetError(), r.GetRecord().GetToken())
		}
	}
}

// bodyFor returns the body length n at which size(n) is want; size grows
// by one a body byte within a varint class.
func bodyFor(t *testing.T, want int, size func(n int) int) int {
	t.Helper()
	n := max(0, want-size(0))
	for range 4 {
		n += want - size(n)
	}
	if got := size(n); got != want {
		t.Fatalf("test setup: no body length gives size %d (got %d at %d)", want, got, n)
	}
	return n
}

// withBody is rec with its key and result body replaced.
func withBody(rec *storage.Record, key string, n int) *storage.Record {
	r := rec.Clone()
	r.Key = key
	r.Result.Body = make([]byte, n)
	return r
}

// The items answered with RESOURCE_EXHAUSTED instead of their record fit
// in the budget too: records that fill it to a few bytes, then one that does
// not fit, whose error must not push the answer past it.
func TestBatchReserveRefusalsFitTheBudget(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	budget := answerBytes(e.svc.Limits())
	replaySize := func(r *storage.Record) int {
		return entrySize(&idemv1.BatchReserveResponse_Result{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED, Record: reserveRecord(storage.OutcomeCompleted, r)})
	}
	keys := []string{"c0", "c1", "c2", "c3"}
	used, rec := completeBig(ctx, t, e, keys, replaySize)
	n := bodyFor(t, budget-used-4, func(n int) int { return replaySize(withBody(rec, "c4", n)) })
	completeKey(ctx, t, e, "c4", make([]byte, n))
	completeKey(ctx, t, e, "c5", bigBody)

	var items []*idemv1.BatchReserveRequest_Item
	for _, k := range append(keys, "c4", "c5") {
		items = append(items, &idemv1.BatchReserveRequest_Item{Key: k, Fingerprint: []byte("fp")})
	}
	resp, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, Items: items})
	if err != nil {
		t.Fatalf("BatchReserve() error = %v", err)
	}
	if got := proto.Size(resp); got > budget {
		t.Errorf("answer is %d bytes, want at most the %d-byte budget", got, budget)
	}
	for i, r := range resp.GetResults() {
		if i < len(keys) && (r.GetError() != nil || !bytes.Equal(r.GetRecord().GetResult().GetBody(), bigBody)) {
			t.Errorf("%s: %v %v, want COMPLETED with its whole result", items[i].GetKey(), r.GetOutcome(), r.GetError())
		}
	}
	wantBudgetSpent(t, "c5", resp.GetResults()[5], budget)
}

// A BatchComplete answer is bounded like a BatchReserve's. Its results are
// the ones the request carried, but each completed record also carries its
// checkpoint, which the request does not: 1,000 keys holding 1 MiB
// checkpoints would make one small request build a GiB answer. Every item
// is still completed; one whose record does not fit is answered without it.
func TestBatchCompleteAnswerBudget(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	budget := answerBytes(e.svc.Limits())
	var items []*idemv1.BatchCompleteRequest_Item
	for i := range 6 {
		key := fmt.Sprint("k", i)
		r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: key, Fingerprint: []byte("fp")})
		if err != nil {
			t.Fatal(err)
		}
		tok := r.GetRecord().GetToken()
		if _, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: testNS, Key: key, Token: tok, Phase: "p", Data: bigBody}); err != nil {
			t.Fatal(err)
		}
		items = append(items, &idemv1.BatchCompleteRequest_Item{Key: key, Token: tok, Result: &idemv1.Result{Body: []byte("ok")}})
	}
	// Twice: the second, a retry of the first, answers the same records.
	for try := range 2 {
		resp, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: testNS, Items: items})
		if err != nil {
			t.Fatalf("BatchComplete() try %d error = %v", try, err)
		}
		if got := proto.Size(resp); got > budget {
			t.Errorf("try %d: answer is %d bytes, want at most the %d-byte budget", try, got, budget)
		}
		for i, r := range resp.GetResults() {
			if r.GetError() != nil {
				t.Errorf("try %d: %s: error %v, want completed", try, items[i].GetKey(), r.GetError())
			}
			if rec := r.GetRecord(); rec != nil && (rec.GetState() != idemv1.RecordState_RECORD_STATE_COMPLETED || string(rec.GetResult().GetBody()) != "ok" || !bytes.Equal(rec.GetCheckpoint().GetData(), bigBody)) {
				t.Errorf("try %d: %s: answered with a partial record", try, items[i].GetKey())
			}
		}
		if resp.GetResults()[0].GetRecord() == nil {
			t.Errorf("try %d: the first item is answered without its record, which fits", try)
		}
	}
	for _, it := range items {
		rec, err := e.store.Lookup(ctx, storageID(it.GetKey()))
		if err != nil || rec.State != storage.StateCompleted {
			t.Errorf("%s: stored %+v, %v, want COMPLETED", it.GetKey(), rec, err)
		}
	}
}
