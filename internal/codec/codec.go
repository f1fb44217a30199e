// Package codec is the gRPC codec idemd and idem's client use. Messages of
// idem.v1's data plane are encoded and decoded by the reflection-free code
// protoc-gen-go-vtproto generates next to them (idem_vtproto.pb.go); any
// other message (health checks, reflection, the admin API, a caller's own
// services) goes to grpc's protobuf codec unchanged.
//
// The generated decoder does not check that string fields hold valid UTF-8,
// as protobuf-go's does: idemd's request validation checks every string of
// the data plane's requests instead, and names the field.
package codec

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
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
	var err error
	if len(data) == 1 {
		err = m.UnmarshalVT(data[0].ReadOnlyData())
	} else {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		err = m.UnmarshalVT(buf.ReadOnlyData())
		buf.Free()
	}
	if err == nil {
		// The generated decoder keeps unknown fields without checking
		// them as protobuf-go does (a group closed by another field's
		// end tag passes); refuse what protobuf-go would.
		err = checkUnknown(v)
	}
	return err
}

// checkUnknown parses the unknown fields a decoded idem.v1 request, or a
// message of idem.v1 inside it, kept, and fails where they are malformed.
// Responses come from idemd's own encoder and are not checked.
func checkUnknown(v any) error {
	switch r := v.(type) {
	case *idemv1.ReserveRequest, *idemv1.ReleaseRequest, *idemv1.ExtendLeaseRequest,
		*idemv1.CheckpointRequest, *idemv1.LookupRequest:
		return unknown(r.(proto.Message))
	case *idemv1.CompleteRequest:
		return errors.Join(unknown(r), unknown(r.GetResult()))
	case *idemv1.BatchReserveRequest:
		if err := unknown(r); err != nil {
			return err
		}
		for _, it := range r.Items {
			if err := unknown(it); err != nil {
				return err
			}
		}
	case *idemv1.BatchCompleteRequest:
		if err := unknown(r); err != nil {
			return err
		}
		for _, it := range r.Items {
			if err := errors.Join(unknown(it), unknown(it.GetResult())); err != nil {
				return err
			}
		}
	}
	return nil
}

func unknown(m proto.Message) error {
	r := m.ProtoReflect()
	if !r.IsValid() { // a nil message inside the request
		return nil
	}
	b := r.GetUnknown()
	for len(b) > 0 {
		_, _, n := protowire.ConsumeField(b)
		if n < 0 {
			return fmt.Errorf("codec: %T: unknown fields: %w", m, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}
