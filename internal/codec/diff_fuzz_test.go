package codec

import (
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// diffTypes are the idem.v1 messages the generated decoder handles.
func diffTypes() []proto.Message {
	return []proto.Message{
		&idemv1.ReserveRequest{}, &idemv1.CompleteRequest{}, &idemv1.ReleaseRequest{},
		&idemv1.ExtendLeaseRequest{}, &idemv1.CheckpointRequest{}, &idemv1.LookupRequest{},
		&idemv1.BatchReserveRequest{}, &idemv1.BatchCompleteRequest{},
		&idemv1.ReserveResponse{}, &idemv1.LookupResponse{}, &idemv1.BatchCompleteResponse{},
	}
}

// isRequest: the codec checks the wire format of requests only; answers
// come from idemd's own encoder, and the generated decoder takes them as
// it is (it refuses a known field of another wire type, which protobuf-go
// keeps as unknown, and is laxer elsewhere).
func isRequest(m proto.Message) bool {
	return strings.HasSuffix(string(m.ProtoReflect().Descriptor().Name()), "Request")
}

// diffDecode decodes b as the i-th type with protobuf-go and with Codec and
// reports where they disagree. protobuf-go's UTF-8 check is the documented
// exception: the codec leaves it to validation.
func diffDecode(t *testing.T, i int, b []byte) {
	t.Helper()
	typ := diffTypes()[i%len(diffTypes())]
	want := typ.ProtoReflect().New().Interface()
	wantErr := proto.Unmarshal(b, want)
	if wantErr != nil && strings.Contains(wantErr.Error(), "UTF-8") {
		return
	}
	got := typ.ProtoReflect().New().Interface()
	err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got)
	name := want.ProtoReflect().Descriptor().FullName()
	switch {
	case wantErr == nil && err != nil:
		if !isRequest(typ) {
			return
		}
		t.Fatalf("%s: Unmarshal(%x) error = %v; protobuf-go accepts it as %v", name, b, err, want)
	case wantErr != nil && err == nil:
		if !isRequest(typ) {
			return
		}
		t.Fatalf("%s: Unmarshal(%x) = %v, nil; protobuf-go fails: %v", name, b, got, wantErr)
	case err == nil && !proto.Equal(stripWKTUnknown(proto.Clone(got)), stripWKTUnknown(proto.Clone(want))):
		t.Fatalf("%s: Unmarshal(%x) = %v; protobuf-go = %v", name, b, got, want)
	}
	if err == nil {
		// And what the codec writes for it, protobuf-go reads back equal.
		out, err := Codec{}.Marshal(got)
		if err != nil {
			t.Fatalf("%s: Marshal(%v) error = %v", name, got, err)
		}
		back := typ.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(out.Materialize(), back); err != nil && !strings.Contains(err.Error(), "UTF-8") {
			t.Fatalf("%s: proto.Unmarshal(Marshal(%v)) error = %v", name, got, err)
		} else if err == nil && !proto.Equal(stripWKTUnknown(back), stripWKTUnknown(proto.Clone(got))) {
			t.Fatalf("%s: proto.Unmarshal(Marshal(%v)) = %v", name, got, back)
		}
		out.Free()
	}
}

// FuzzSameAsProtobufGo: on any input, the codec accepts what protobuf-go
// accepts, decodes it to an equal message, and (for requests, which it
// checks) rejects what protobuf-go rejects.
func FuzzSameAsProtobufGo(f *testing.F) {
	for _, m := range messages() {
		b, _ := proto.Marshal(m)
		for i, typ := range diffTypes() {
			if typ.ProtoReflect().Descriptor() == m.ProtoReflect().Descriptor() {
				f.Add(i, b)
			}
		}
	}
	for i := range diffTypes() {
		f.Add(i, []byte{0x43, 0x24})
	}
	f.Fuzz(func(t *testing.T, i int, b []byte) {
		if i < 0 {
			i = -i
		}
		diffDecode(t, i, b)
	})
}

// TestSameAsProtobufGoTruncated decodes every prefix of full messages.
func TestSameAsProtobufGoTruncated(t *testing.T) {
	for _, m := range messages() {
		b, _ := proto.Marshal(m)
		for i, typ := range diffTypes() {
			if typ.ProtoReflect().Descriptor() != m.ProtoReflect().Descriptor() {
				continue
			}
			for n := range len(b) + 1 {
				diffDecode(t, i, b[:n])
			}
		}
	}
}

// nestedWire is a CompleteRequest whose result's detail carries extra,
// or a ReserveRequest whose lease_ttl carries it.
func completeDetailWith(extra []byte) []byte {
	any, _ := proto.Marshal(&anypb.Any{TypeUrl: "u", Value: []byte{1}})
	any = append(any, extra...)
	res := protoAppendBytes(nil, 4, any)
	return protoAppendBytes([]byte{0x1a, 1, 'k'}, 5, res)
}

func reserveTTLWith(extra []byte) []byte {
	d, _ := proto.Marshal(durationpb.New(1e9))
	d = append(d, extra...)
	return protoAppendBytes([]byte{0x1a, 1, 'k'}, 5, d)
}

func protoAppendBytes(b []byte, field byte, v []byte) []byte {
	b = append(b, field<<3|2)
	n := len(v)
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	b = append(b, byte(n))
	return append(b, v...)
}

// TestNestedUnknownFieldsAsProtobufGo: malformed unknown fields inside a
// well-known type of a request (a detail, a duration) fail as in
// protobuf-go.
func TestNestedUnknownFieldsAsProtobufGo(t *testing.T) {
	badGroup := []byte{0x43, 0x24}
	newField := []byte{0x98, 0x06, 0x01}
	for _, tc := range []struct {
		name string
		i    int
		data func([]byte) []byte
	}{
		{"Complete's result's detail", 1, completeDetailWith},
		{"Reserve's lease_ttl", 0, reserveTTLWith},
	} {
		for _, extra := range [][]byte{badGroup, newField} {
			diffDecode(t, tc.i, tc.data(extra))
		}
	}
}

// stripWKTUnknown drops the unknown fields of the well-known types inside m
// (vtprotobuf's decoders for them skip unknown fields, and storage keeps
// only a detail's type URL and value), and returns m. Other unknown fields
// are kept as one marker byte: protobuf-go rewrites an overlong tag, and
// idemd never reads them.
func stripWKTUnknown(m proto.Message) proto.Message {
	var walk func(protoreflect.Message)
	walk = func(r protoreflect.Message) {
		if r.Descriptor().FullName().Parent() == "google.protobuf" {
			r.SetUnknown(nil)
		} else if len(r.GetUnknown()) > 0 {
			r.SetUnknown(protoreflect.RawFields{0x08, 0x01})
		}
		r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := range v.List().Len() {
					walk(v.List().Get(i).Message())
				}
			case fd.IsMap():
			case fd.Message() != nil:
				walk(v.Message())
			}
			return true
		})
	}
	walk(m.ProtoReflect())
	return m
}

// TestWireEdgesAsProtobufGo: inputs where the generated decoder and
// protobuf-go used to disagree.
func TestWireEdgesAsProtobufGo(t *testing.T) {
	// Field number 1<<32|3: the generated decoder truncated it to int32
	// and read it as field 3, the key; protobuf-go rejects it.
	tag := uint64(1<<32|3)<<3 | 2
	var alias []byte
	for tag >= 0x80 {
		alias = append(alias, byte(tag)|0x80)
		tag >>= 7
	}
	alias = append(alias, byte(tag), 1, 'k')
	for _, tc := range []struct {
		name string
		i    int
		b    []byte
	}{
		{"field number truncated onto key", 0, alias},
		{"field number above 2^29-1", 5, []byte{0xed, 0xec, 0xec, 0xec, 0x30, 0x30, 0x30, 0x30, 0x30}},
		// protobuf-go keeps a known field of another wire type as an
		// unknown field; the generated decoder failed.
		{"key as a varint", 0, []byte{0x18, 0x01, 0x12, 0x02, 'n', 's'}},
		{"record as a varint", 8, []byte{0x10, 0x30}},
		{"10-byte token, 10th byte 0x7f", 1, []byte{0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}},
		{"negative code, 10 bytes", 1, []byte{0x2a, 0x0b, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"map entry without key or value", 1, []byte{0x2a, 0x02, 0x2a, 0x00}},
		{"map entry repeated key", 1, []byte{0x2a, 0x0c, 0x2a, 0x04, 0x0a, 0x00, 0x12, 0x00, 0x2a, 0x04, 0x0a, 0x00, 0x12, 0x00}},
		{"result twice merges", 1, []byte{0x2a, 0x02, 0x08, 0x01, 0x2a, 0x03, 0x12, 0x01, 'm'}},
		{"length overflows", 0, []byte{0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'k'}},
	} {
		t.Run(tc.name, func(t *testing.T) { diffDecode(t, tc.i, tc.b) })
	}
}
