package client_test

import (
	"testing"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// mapEntries encodes map<string,string> entries as field 1000, in the
// order given: how a newer client's map field this server does not know
// arrives, in whatever order the client's marshal iterated its map.
func mapEntries(kv ...string) []byte {
	var b []byte
	for i := 0; i < len(kv); i += 2 {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, kv[i])
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = protowire.AppendString(e, kv[i+1])
		b = protowire.AppendTag(b, 1000, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

// A retry re-marshals the request, and a map field the service does not
// know (a client built from a newer proto) comes in another order: the
// same command must still be recognised.
func TestS12FingerprintIgnoresUnknownFieldOrder(t *testing.T) {
	ctx := testCtx(t)
	a := startApp(t, appConfig{})
	r1 := unaryReq("x")
	r1.ProtoReflect().SetUnknown(mapEntries("a", "1", "b", "2"))
	r2 := proto.Clone(r1).(*testgrpc.SimpleRequest)
	r2.ProtoReflect().SetUnknown(mapEntries("b", "2", "a", "1"))
	first, err, _ := a.call(ctx, "unk", r1)
	if err != nil {
		t.Fatal(err)
	}
	got, err, replayed := a.call(ctx, "unk", r2)
	if err != nil || got != first || !replayed {
		t.Errorf("retry with a map field unknown to the service in another order = %q, %v, replayed %v; want %q replayed", got, err, replayed, first)
	}
	if n := a.ts.calls.Load(); n != 1 {
		t.Errorf("handler runs = %d, want 1", n)
	}
}

// Sorted, not dropped: a field unknown to the service still tells two
// commands apart, since a service that passes it on acts on it.
func TestS12FingerprintKeepsUnknownFieldContent(t *testing.T) {
	ctx := testCtx(t)
	a := startApp(t, appConfig{})
	r1 := unaryReq("x")
	r1.ProtoReflect().SetUnknown(mapEntries("a", "1", "b", "2"))
	r2 := proto.Clone(r1).(*testgrpc.SimpleRequest)
	r2.ProtoReflect().SetUnknown(mapEntries("a", "1", "b", "3"))
	if _, err, _ := a.call(ctx, "unk2", r1); err != nil {
		t.Fatal(err)
	}
	if got, err, replayed := a.call(ctx, "unk2", r2); err == nil {
		t.Errorf("another command under the same key, differing in a field unknown to the service = %q replayed %v; want it refused as key reuse", got, replayed)
	}
}
