package codec

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// fullRecord sets every field of a Record, nested messages and maps
// included, so a field either codec drops or misplaces shows.
func fullRecord() *idemv1.Record {
	return &idemv1.Record{
		Tenant: "acme", Namespace: "payments.charge", Key: "order-42/charge",
		Fingerprint: bytes.Repeat([]byte{0xab}, 32),
		Token:       7, State: idemv1.RecordState_RECORD_STATE_COMPLETED,
		Result: &idemv1.Result{
			Code: 6, Message: "already charged ✓", Body: []byte("{\"id\":\"ch_1\"}"),
			Details: []*anypb.Any{
				{TypeUrl: "type.googleapis.com/google.rpc.ErrorInfo", Value: []byte{1, 2, 3}},
				{TypeUrl: "type.googleapis.com/x.Empty"},
			},
			Metadata: map[string]string{"x-request-id": "r-1", "content-type": "application/json", "": ""},
		},
		Checkpoint:     &idemv1.RecordCheckpoint{Phase: "captured", Data: []byte{0, 1, 0}},
		Attempts:       3,
		CreatedAt:      timestamppb.New(timestamppb.Now().AsTime().Add(-1)),
		LeaseExpiresAt: &timestamppb.Timestamp{Seconds: 1_800_000_000, Nanos: 999_999_999},
		CompletedAt:    &timestamppb.Timestamp{Seconds: -5},
		ExpiresAt:      &timestamppb.Timestamp{Seconds: 1_900_000_000},
	}
}

func messages() []proto.Message {
	return []proto.Message{
		&idemv1.ReserveRequest{
			Tenant: "acme", Namespace: "payments", Key: "k", Fingerprint: []byte{9},
			LeaseTtl: durationpb.New(30e9), Retention: &durationpb.Duration{Seconds: 86400, Nanos: 1}, Wait: durationpb.New(1e9),
		},
		&idemv1.ReserveResponse{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED, Record: fullRecord()},
		&idemv1.CompleteRequest{Tenant: "t", Namespace: "n", Key: "k", Token: 1 << 63, Result: fullRecord().Result},
		&idemv1.BatchCompleteResponse{Results: []*idemv1.BatchCompleteResponse_Result{
			{Record: fullRecord()},
			{Error: &idemv1.ItemError{Code: 9, Message: "lease lost"}},
		}},
		&idemv1.ReserveResponse{}, // empty: encodes to no bytes
	}
}

// TestSameWireAsProtobufGo checks both directions against protobuf-go:
// what this codec writes decodes there to an equal message, and what
// protobuf-go writes decodes here to an equal message.
func TestSameWireAsProtobufGo(t *testing.T) {
	for _, m := range messages() {
		name := string(m.ProtoReflect().Descriptor().FullName())
		out, err := Codec{}.Marshal(m)
		if err != nil {
			t.Fatalf("%s: Marshal() error = %v", name, err)
		}
		got := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(out.Materialize(), got); err != nil {
			t.Fatalf("%s: protobuf-go cannot decode what Marshal wrote: %v", name, err)
		}
		if !proto.Equal(got, m) {
			t.Errorf("%s: Marshal() then proto.Unmarshal = %v, want %v", name, got, m)
		}
		out.Free()

		wire, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		back := m.ProtoReflect().New().Interface()
		if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, back); err != nil {
			t.Fatalf("%s: Unmarshal() of protobuf-go's encoding error = %v", name, err)
		}
		if !proto.Equal(back, m) {
			t.Errorf("%s: proto.Marshal then Unmarshal() = %v, want %v", name, back, m)
		}
	}
}

// TestUnmarshalSplitInput decodes a message that arrives in several
// buffers, as gRPC hands over a message read from several HTTP/2 frames.
func TestUnmarshalSplitInput(t *testing.T) {
	m := &idemv1.ReserveResponse{Record: fullRecord()}
	wire, _ := proto.Marshal(m)
	var data mem.BufferSlice
	for i := 0; i < len(wire); i += 7 {
		data = append(data, mem.SliceBuffer(wire[i:min(i+7, len(wire))]))
	}
	got := &idemv1.ReserveResponse{}
	if err := (Codec{}).Unmarshal(data, got); err != nil {
		t.Fatalf("Unmarshal() error = %v", err)
	}
	if !proto.Equal(got, m) {
		t.Errorf("Unmarshal() of %d buffers = %v, want %v", len(data), got, m)
	}
}

// TestUnmarshalReplaces checks that decoding into a message that holds
// fields replaces them, as proto.Unmarshal does, instead of merging.
func TestUnmarshalReplaces(t *testing.T) {
	dst := &idemv1.ReserveResponse{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH, Record: fullRecord()}
	wire, _ := proto.Marshal(&idemv1.ReserveResponse{Record: &idemv1.Record{Key: "other"}})
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, dst); err != nil {
		t.Fatal(err)
	}
	want := &idemv1.ReserveResponse{Record: &idemv1.Record{Key: "other"}}
	if !proto.Equal(dst, want) {
		t.Errorf("Unmarshal() into a used message = %v, want %v", dst, want)
	}
}

// TestDecodedOwnsItsBytes checks that nothing decoded refers to the input:
// gRPC recycles the buffer once Unmarshal returns.
func TestDecodedOwnsItsBytes(t *testing.T) {
	m := &idemv1.CompleteRequest{Key: "key", Result: &idemv1.Result{Body: []byte("body"), Message: "msg",
		Details: []*anypb.Any{{TypeUrl: "u", Value: []byte("v")}}, Metadata: map[string]string{"k": "v"}}}
	wire, _ := proto.Marshal(m)
	got := &idemv1.CompleteRequest{}
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got); err != nil {
		t.Fatal(err)
	}
	for i := range wire {
		wire[i] = 0xff
	}
	if !proto.Equal(got, m) {
		t.Errorf("after the input was overwritten the message is %v, want %v", got, m)
	}
}

// TestLargeMessageUsesPool covers the pooled-buffer path of Marshal.
func TestLargeMessageUsesPool(t *testing.T) {
	m := &idemv1.CompleteRequest{Key: "k", Result: &idemv1.Result{Body: bytes.Repeat([]byte("x"), 64<<10)}}
	out, err := Codec{}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Free()
	wire, _ := proto.Marshal(m)
	if !bytes.Equal(out.Materialize(), wire) {
		t.Errorf("Marshal() of a 64 KiB message differs from protobuf-go's encoding")
	}
}

// TestOtherMessagesFallBack checks that messages without generated
// encoders (the health service's, the admin API's) still work, and that
// malformed input is refused rather than half-decoded.
func TestOtherMessagesFallBack(t *testing.T) {
	for _, m := range []proto.Message{
		&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING},
		&idemv1.DeleteKeyRequest{Tenant: "t", Namespace: "n", Key: "k"},
	} {
		out, err := Codec{}.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal(%T) error = %v", m, err)
		}
		got := m.ProtoReflect().New().Interface()
		if err := (Codec{}).Unmarshal(out, got); err != nil {
			t.Fatalf("Unmarshal(%T) error = %v", m, err)
		}
		if !proto.Equal(got, m) {
			t.Errorf("round trip of %T = %v, want %v", m, got, m)
		}
	}
	// The fallback keeps protobuf-go's UTF-8 check.
	bad := []byte{0x1a, 0x01, 0xff} // field 3 (key), one byte 0xff
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &idemv1.DeleteKeyRequest{}); err == nil {
		t.Error("Unmarshal(DeleteKeyRequest with invalid UTF-8 key) error = nil, want an error")
	}
	// Truncated input fails on the generated path too.
	wire, _ := proto.Marshal(&idemv1.ReserveRequest{Key: strings.Repeat("k", 40)})
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire[:len(wire)-3])}, &idemv1.ReserveRequest{}); err == nil {
		t.Error("Unmarshal(truncated ReserveRequest) error = nil, want an error")
	}
	if (Codec{}).Name() != encoding.GetCodecV2(grpcproto.Name).Name() {
		t.Errorf("Name() = %q, want the protobuf codec's name", (Codec{}).Name())
	}
}

func BenchmarkCodec(b *testing.B) {
	req := &idemv1.ReserveRequest{Tenant: "bench", Namespace: "bench", Key: "bench-000000123456", Fingerprint: bytes.Repeat([]byte{1}, 32)}
	resp := &idemv1.ReserveResponse{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED, Record: &idemv1.Record{
		Tenant: "bench", Namespace: "bench", Key: "bench-000000123456", Fingerprint: bytes.Repeat([]byte{1}, 32),
		Token: 1, State: idemv1.RecordState_RECORD_STATE_IN_PROGRESS, Attempts: 1,
		CreatedAt: timestamppb.Now(), LeaseExpiresAt: timestamppb.Now(), ExpiresAt: timestamppb.Now(),
	}}
	for _, c := range []struct {
		name  string
		codec encoding.CodecV2
	}{{"protobuf-go", encoding.GetCodecV2(grpcproto.Name)}, {"vtproto", Codec{}}} {
		for _, m := range []proto.Message{req, resp} {
			name := c.name + "/" + string(m.ProtoReflect().Descriptor().Name())
			b.Run(name+"/Marshal", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					out, err := c.codec.Marshal(m)
					if err != nil {
						b.Fatal(err)
					}
					out.Free()
				}
			})
			wire, _ := proto.Marshal(m)
			b.Run(name+"/Unmarshal", func(b *testing.B) {
				b.ReportAllocs()
				data := mem.BufferSlice{mem.SliceBuffer(wire)}
				for b.Loop() {
					if err := c.codec.Unmarshal(data, m.ProtoReflect().New().Interface()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestUnknownFieldsAsProtobufGo: the generated decoder keeps unknown fields
// without checking them, so a request holding any is decoded again by
// protobuf-go: a malformed one (a group closed by another field's end tag,
// here or in a message inside the request) fails as it does there, and a
// well-formed one decodes as it does there.
func TestUnknownFieldsAsProtobufGo(t *testing.T) {
	// Field 8 opens a group (0x43) that field 4 closes (0x24).
	badGroup := []byte{0x43, 0x24}
	// Field 99, varint 1: what a newer client might send.
	newField := []byte{0x98, 0x06, 0x01}
	wire := func(m proto.Message, extra []byte) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return append(b, extra...)
	}
	// A CompleteRequest whose result (field 5) carries the extra bytes.
	completeWithResult := func(extra []byte) []byte {
		res := wire(&idemv1.Result{Code: 1}, extra)
		b := wire(&idemv1.CompleteRequest{Key: "k", Token: 1}, nil)
		b = append(b, 0x2a, byte(len(res)))
		return append(b, res...)
	}
	batchItem := func(extra []byte) []byte {
		item := wire(&idemv1.BatchReserveRequest_Item{Key: "k"}, extra)
		b := wire(&idemv1.BatchReserveRequest{Tenant: "t"}, nil)
		b = append(b, 0x2a, byte(len(item)))
		return append(b, item...)
	}
	for _, tt := range []struct {
		name string
		new  func() proto.Message
		data []byte
	}{
		{"Reserve", func() proto.Message { return &idemv1.ReserveRequest{} }, wire(&idemv1.ReserveRequest{Key: "k"}, nil)},
		{"Complete's result", func() proto.Message { return &idemv1.CompleteRequest{} }, nil},
		{"BatchReserve's item", func() proto.Message { return &idemv1.BatchReserveRequest{} }, nil},
	} {
		for _, extra := range []struct {
			name  string
			bytes []byte
			ok    bool
		}{{"mismatched group", badGroup, false}, {"unknown field", newField, true}} {
			t.Run(tt.name+"/"+extra.name, func(t *testing.T) {
				var data []byte
				switch tt.name {
				case "Complete's result":
					data = completeWithResult(extra.bytes)
				case "BatchReserve's item":
					data = batchItem(extra.bytes)
				default:
					data = append(tt.data, extra.bytes...)
				}
				want := tt.new()
				wantErr := proto.Unmarshal(data, want)
				if (wantErr == nil) != extra.ok {
					t.Fatalf("protobuf-go error = %v, want ok = %v", wantErr, extra.ok)
				}
				got := tt.new()
				err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, got)
				if (err == nil) != extra.ok {
					t.Fatalf("Unmarshal error = %v, want ok = %v as protobuf-go", err, extra.ok)
				}
				if err == nil && !proto.Equal(got, want) {
					t.Errorf("Unmarshal = %v, protobuf-go = %v", got, want)
				}
			})
		}
	}
}

// TestUnknownFieldsLeaveUTF8ToValidation: a request with a well-formed
// unknown field decodes as any other, so a bad string in it still reaches
// idemd's validation, which answers INVALID_ARGUMENT naming the field,
// rather than failing in the codec.
func TestUnknownFieldsLeaveUTF8ToValidation(t *testing.T) {
	b, err := proto.Marshal(&idemv1.ReserveRequest{Namespace: "ns"})
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, 0x1a, 2, 0xff, 0xfe) // key (field 3) = "\xff\xfe"
	b = append(b, 0x98, 0x06, 0x01)    // field 99, varint 1
	var got idemv1.ReserveRequest
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err != nil {
		t.Fatalf("Unmarshal error = %v, want the request decoded for validation to judge", err)
	}
	if got.GetKey() != "\xff\xfe" {
		t.Errorf("key = %q, want the bytes sent", got.GetKey())
	}
}
