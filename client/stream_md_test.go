package client_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

type streamAnswer struct {
	bodies   []string
	hdr, tlr metadata.MD
	err      error
}

func (s streamAnswer) replayed() bool {
	return slices.Equal(s.hdr.Get(client.ReplayedHeader), []string{"true"})
}

func recvStream(t *testing.T, a *appEnv, key string, req *testgrpc.StreamingOutputCallRequest) streamAnswer {
	t.Helper()
	s, err := a.tc.StreamingOutputCall(client.WithKey(testCtx(t), key), req)
	if err != nil {
		t.Fatalf("StreamingOutputCall: %v", err)
	}
	var got streamAnswer
	for {
		m, err := s.Recv()
		if err != nil {
			if err != io.EOF {
				got.err = err
			}
			break
		}
		got.bodies = append(got.bodies, string(m.GetPayload().GetBody()))
	}
	got.hdr, _ = s.Header()
	got.tlr = s.Trailer()
	return got
}

// TestServerStreamReplayKeepsMetadata: a server stream's header and trailer
// are part of its answer, as for unary calls; a replay carries what gRPC
// accepted from the handler (not a header set after headers went out).
func TestServerStreamReplayKeepsMetadata(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("error=%v", fail), func(t *testing.T) {
			lateErr := make(chan error, 2)
			ts := &testService{output: func(n int64, _ *testgrpc.StreamingOutputCallRequest, ss grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
				if err := ss.SetHeader(metadata.Pairs("x-run", fmt.Sprint(n), "x-raw-bin", string([]byte{0xff, 0x00, 0x80}))); err != nil {
					return err
				}
				// Through the context, as grpc.SetHeader users do.
				if err := grpc.SetHeader(ss.Context(), metadata.Pairs("x-ctx", fmt.Sprint(n))); err != nil {
					return err
				}
				if err := ss.SendHeader(metadata.Pairs("x-sent", fmt.Sprint(n))); err != nil {
					return err
				}
				lateErr <- ss.SetHeader(metadata.Pairs("x-late", "1")) // headers already went out
				for i := range 2 {
					if err := ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: fmt.Appendf(nil, "run-%d-msg-%d", n, i)}}); err != nil {
						return err
					}
				}
				ss.SetTrailer(metadata.Pairs("x-charge-id", fmt.Sprintf("ch_%d", n)))
				if fail {
					return status.Error(codes.FailedPrecondition, "card declined")
				}
				return nil
			}}
			a := startApp(t, appConfig{ts: ts})
			req := &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}}
			first := recvStream(t, a, "smd", req)
			second := recvStream(t, a, "smd", req)
			if err := <-lateErr; err == nil {
				t.Fatal("SetHeader after SendHeader succeeded; the test needs gRPC to refuse it")
			}
			if first.replayed() || !second.replayed() {
				t.Fatalf("replayed = %v then %v, want false then true", first.replayed(), second.replayed())
			}
			if status.Code(first.err) != status.Code(second.err) || status.Convert(first.err).Message() != status.Convert(second.err).Message() {
				t.Errorf("errors = %v then %v", first.err, second.err)
			}
			if !slices.Equal(first.bodies, second.bodies) || len(first.bodies) != 2 {
				t.Errorf("replayed messages = %q, first call's = %q", second.bodies, first.bodies)
			}
			for _, k := range []string{"x-run", "x-raw-bin", "x-ctx", "x-sent"} {
				if !slices.Equal(second.hdr.Get(k), first.hdr.Get(k)) || len(first.hdr.Get(k)) != 1 {
					t.Errorf("replayed header %s = %q, first call's = %q", k, second.hdr.Get(k), first.hdr.Get(k))
				}
			}
			if v := second.hdr.Get("x-late"); len(v) != 0 {
				t.Errorf("replayed header x-late = %q, want none (gRPC refused it)", v)
			}
			if !slices.Equal(second.tlr.Get("x-charge-id"), first.tlr.Get("x-charge-id")) || len(first.tlr.Get("x-charge-id")) != 1 {
				t.Errorf("replayed trailer x-charge-id = %q, first call's = %q", second.tlr.Get("x-charge-id"), first.tlr.Get("x-charge-id"))
			}
			if n := ts.calls.Load(); n != 1 {
				t.Errorf("handler runs = %d, want 1", n)
			}
		})
	}
}

// TestServerStreamReplayRecordWithoutMetadata: a stream stored before
// metadata was recorded replays as it did then.
func TestServerStreamReplayRecordWithoutMetadata(t *testing.T) {
	ctx := testCtx(t)
	ie := startIdem(t, idemConfig{})
	a := startAppWith(t, appConfig{}, ie.svc)
	method := testgrpc.TestService_StreamingOutputCall_FullMethodName
	req := &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("old")}}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write(b)
	rr, err := ie.svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: method, Key: "old", Fingerprint: h.Sum(nil)})
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	var frames []byte
	for _, body := range []string{"a", "b"} {
		m, _ := proto.Marshal(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(body)}})
		frames = protowire.AppendBytes(frames, m)
	}
	res := &idemv1.Result{Body: frames, Metadata: map[string]string{
		"idem-stream": "1", "idem-type": "grpc.testing.StreamingOutputCallResponse",
	}}
	if _, err := ie.svc.Complete(ctx, &idemv1.CompleteRequest{Namespace: method, Key: "old", Token: rr.GetRecord().GetToken(), Result: res}); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	got := recvStream(t, a, "old", req)
	if got.err != nil || !slices.Equal(got.bodies, []string{"a", "b"}) || !got.replayed() {
		t.Errorf("replay = %q, %v, replayed %v; want [a b], nil, true", got.bodies, got.err, got.replayed())
	}
	for k := range got.tlr {
		t.Errorf("replayed trailer has %s = %q, want none", k, got.tlr.Get(k))
	}
	if n := a.ts.calls.Load(); n != 0 {
		t.Errorf("handler runs = %d, want 0", n)
	}
}

// TestServerStreamMetadataCountsTowardResultSize: the recorded header is
// part of the stored result, so it counts against WithMaxResultSize.
func TestServerStreamMetadataCountsTowardResultSize(t *testing.T) {
	ts := &testService{output: func(n int64, _ *testgrpc.StreamingOutputCallRequest, ss grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
		if err := ss.SetHeader(metadata.Pairs("x-big", strings.Repeat("v", 512))); err != nil {
			return err
		}
		return ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: fmt.Appendf(nil, "run-%d", n)}})
	}}
	a := startApp(t, appConfig{ts: ts, opts: []client.InterceptorOption{client.WithMaxResultSize(256)}})
	req := &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}}
	for i := range 2 {
		if got := recvStream(t, a, "big-md", req); got.err != nil || got.replayed() {
			t.Fatalf("call %d = %v, replayed %v; want the handler's answer", i+1, got.err, got.replayed())
		}
	}
	if n := ts.calls.Load(); n != 2 {
		t.Errorf("handler runs = %d, want 2 (result over the limit is not cached)", n)
	}
	if n := a.counters.ResultTooLarge.Load(); n != 2 {
		t.Errorf("ResultTooLarge = %d, want 2", n)
	}
}
