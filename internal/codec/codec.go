// Package codec is the gRPC codec idemd and idem's client use. Messages of
// idem.v1's data plane are encoded and decoded by the reflection-free code
// protoc-gen-go-vtproto generates next to them (idem_vtproto.pb.go); any
// other message (health checks, reflection, the admin API, a caller's own
// services) goes to grpc's protobuf codec unchanged.
//
// The generated decoder does not check that string fields hold valid UTF-8,
// as protobuf-go's does: idemd's request validation checks every string of
// the data plane's requests instead, and names the field. Everything else
// about the wire format it checks as protobuf-go does (see Unmarshal).
package codec

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Name is the codec's name, the same as grpc's protobuf codec: the wire
// format is the same, so either side may use either codec.
const Name = grpcproto.Name

// vtMessage is what protoc-gen-go-vtproto generates for a message
// (features marshal, unmarshal and size), and Reset what protoc-gen-go does.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVT([]byte) error
	Reset()
}

// Codec implements encoding.CodecV2. Its zero value is ready to use.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// fallback is grpc's protobuf codec, registered by grpcproto's init.
var fallback = encoding.GetCodecV2(grpcproto.Name)

// Name returns "proto".
func (Codec) Name() string { return Name }

// Marshal encodes v in one buffer of its exact size, from grpc's buffer pool
// when it is large enough to be worth pooling.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMessage)
	if !ok {
		return fallback.Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVT(buf); err != nil {
			return nil, fmt.Errorf("codec: marshal %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVT((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, fmt.Errorf("codec: marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Unmarshal decodes data into v, replacing what v held as proto.Unmarshal
// does. The generated decoder copies every string and bytes field, so
// nothing in v refers to data once it returns.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(vtMessage)
	if !ok {
		return fallback.Unmarshal(data, v)
	}
	m.Reset()
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		b = buf.ReadOnlyData()
	}
	pm, isProto := v.(proto.Message)
	if !isProto || !strings.HasSuffix(string(pm.ProtoReflect().Descriptor().Name()), "Request") {
		// Answers come from idemd's own encoder; the check below costs a
		// client more than the decoding itself.
		return m.UnmarshalVT(b)
	}
	// The generated decoder is laxer than protobuf-go in places (it keeps
	// malformed unknown fields, truncates field numbers above 2^31 onto
	// known ones, takes any 10th varint byte), and stricter in one (a
	// known field with another wire type is an error, not an unknown
	// field). Check the wire format first as protobuf-go does, and let
	// protobuf-go decide whatever the generated decoder refuses.
	if err := wellFormed(b, pm.ProtoReflect().Descriptor(), 0); err != nil {
		return fmt.Errorf("codec: %T: %w", v, err)
	}
	if err := m.UnmarshalVT(b); err != nil {
		m.Reset()
		return proto.Unmarshal(b, pm)
	}
	return nil
}

// maxDepth is protobuf-go's default recursion limit.
const maxDepth = 10000

// wellFormed checks b as protobuf-go's decoder does, apart from UTF-8 (left
// to idemd's validation): every tag and varint well formed, every length
// within b, every group closed by its own end tag, and the same recursively
// for the known message fields (map entries, durations, timestamps, Any).
func wellFormed(b []byte, md protoreflect.MessageDescriptor, depth int) error {
	if depth > maxDepth {
		return errors.New("exceeded maximum recursion depth")
	}
	fields := md.Fields()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("invalid field number %d", num)
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			if fd := fields.ByNumber(num); fd != nil && (fd.Kind() == protoreflect.MessageKind) {
				if err := wellFormed(v, fd.Message(), depth+1); err != nil {
					return err
				}
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}
