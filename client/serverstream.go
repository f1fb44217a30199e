package client

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// errReplayDone ends a server-streaming handler whose call was answered
// from a stored result before the handler's own code ran.
var errReplayDone = errors.New("idem: call replayed from the stored result")

type streamMode int

const (
	modeNone streamMode = iota
	modeReserved
	modeReplayed
	modeFailOpen
	modeRefused
)

// streamCtx is a stream's context, which RecvMsg replaces (with one that
// carries the message's token) while other goroutines of the handler, a
// sender say, may be reading it.
type streamCtx struct {
	mu  sync.Mutex
	ctx context.Context
}

func (c *streamCtx) get() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ctx
}

func (c *streamCtx) set(ctx context.Context) {
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
}

// recordingStream reserves the key when the handler receives the request
// (the fingerprint needs it) and records what the handler sends.
type recordingStream struct {
	grpc.ServerStream
	g      *guard
	method string
	key    string
	ctx    streamCtx
	md     *mdRecorder // header and trailer, set on ss or on its context

	received  bool
	mode      streamMode
	a         *attempt
	answer    error // replayed status, or the refusal
	typeName  string
	frames    []byte
	count     int
	overflown bool // not stored: too long, too large or not encodable
	tooLarge  bool // overflown by WithMaxStreamMessages or WithMaxResultSize
}

func (s *recordingStream) Context() context.Context { return s.ctx.get() }

func (s *recordingStream) RecvMsg(m any) error {
	if s.received {
		return s.ServerStream.RecvMsg(m)
	}
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	s.received = true
	pm, ok := m.(proto.Message)
	if !ok {
		s.mode, s.answer = modeRefused, status.Error(codes.Internal, "idem: request is not a protobuf message")
		return s.answer
	}
	fp, err := s.g.o.fingerprint(s.method, pm)
	if err != nil {
		s.mode, s.answer = modeRefused, err
		return err
	}
	a, stored, err := s.g.begin(s.ctx.get(), s.method, s.key, fp)
	switch {
	case errors.Is(err, errFailOpen):
		s.mode = modeFailOpen
		return nil
	case err != nil:
		s.mode, s.answer = modeRefused, err
		return err
	case stored != nil:
		s.mode = modeReplayed
		s.answer = s.replay(stored)
		return errReplayDone
	}
	s.mode, s.a = modeReserved, a
	s.ctx.set(a.start(s.ctx.get()))
	return nil
}

func (s *recordingStream) SendMsg(m any) error {
	switch s.mode {
	case modeReplayed, modeRefused:
		return errReplayDone
	case modeReserved:
		s.record(m)
	}
	return s.ServerStream.SendMsg(m)
}

// Only what gRPC accepted is kept, as for unary calls.
func (s *recordingStream) SetHeader(md metadata.MD) error {
	if err := s.ServerStream.SetHeader(md); err != nil {
		return err
	}
	s.md.keepHeader(md)
	return nil
}

func (s *recordingStream) SendHeader(md metadata.MD) error {
	if err := s.ServerStream.SendHeader(md); err != nil {
		return err
	}
	s.md.keepHeader(md)
	return nil
}

// SetTrailer reports no error: during the handler gRPC keeps the trailer.
func (s *recordingStream) SetTrailer(md metadata.MD) {
	s.ServerStream.SetTrailer(md)
	s.md.keepTrailer(md)
}

func (s *recordingStream) record(m any) {
	if s.overflown {
		return
	}
	pm, ok := m.(proto.Message)
	var b []byte
	var err error
	if ok {
		b, err = proto.MarshalOptions{Deterministic: true}.Marshal(pm)
	}
	s.count++
	o := s.g.o
	if !ok || err != nil {
		s.overflown, s.frames = true, nil
		return
	}
	if s.count > o.maxStreamMsgs || len(s.frames)+len(b) > o.maxResult {
		s.overflown, s.tooLarge, s.frames = true, true, nil
		return
	}
	if s.typeName == "" {
		s.typeName = string(pm.ProtoReflect().Descriptor().FullName())
	}
	s.frames = protowire.AppendBytes(s.frames, b)
}

func (s *recordingStream) result(herr error) *idemv1.Result {
	if s.overflown {
		return nil
	}
	r := &idemv1.Result{Body: s.frames, Metadata: map[string]string{metaStream: "1"}}
	if s.typeName != "" {
		r.Metadata[metaType] = s.typeName
	}
	if herr != nil {
		// As for unary calls: the message made valid UTF-8, or idem refuses it.
		e := resultOf(nil, herr)
		r.Code, r.Message, r.Details = e.GetCode(), e.GetMessage(), e.GetDetails()
	}
	// Counted by finish's size check with the messages.
	return s.md.addTo(r)
}

// replay sends the stored messages in order and returns the stored status.
func (s *recordingStream) replay(r *idemv1.Result) error {
	// Set before the first message, which sends the header.
	hdr, tlr := storedMetadata(r)
	_ = s.ServerStream.SetHeader(hdr)
	if tlr != nil {
		s.ServerStream.SetTrailer(tlr)
	}
	s.g.o.report(s.ctx.get(), Event{Kind: EventReplayed, Method: s.method, Key: s.key})
	body := r.GetBody()
	for len(body) > 0 {
		b, n := protowire.ConsumeBytes(body)
		if n < 0 {
			return status.Error(codes.Internal, "idem: stored stream is corrupt")
		}
		body = body[n:]
		m, err := newStored(r)
		if err != nil {
			return err
		}
		if err := proto.Unmarshal(b, m); err != nil {
			return status.Errorf(codes.Internal, "idem: stored stream message does not decode: %v", err)
		}
		if err := s.ServerStream.SendMsg(m); err != nil {
			return err
		}
	}
	return storedStatus(r)
}

func (g *guard) serverStream(srv any, ss grpc.ServerStream, method, key string, handler grpc.StreamHandler) error {
	// grpc.SetHeader(ss.Context(), …) bypasses ss, so record there too.
	ctx, md := recordMetadata(ss.Context())
	if md == nil {
		md = &mdRecorder{} // no transport stream in ctx: records ss's calls only
	}
	s := &recordingStream{ServerStream: ss, g: g, method: method, key: key, ctx: streamCtx{ctx: ctx}, md: md}
	base := ss.Context()
	finished := false
	defer func() {
		if !finished && s.a != nil { // the handler panicked
			s.a.stop()
			s.a.release(base, "handler panicked")
		}
	}()
	herr := handler(srv, s)
	finished = true
	switch s.mode {
	case modeReplayed, modeRefused:
		return s.answer
	case modeReserved:
		s.a.stop()
		s.a.finish(base, s.result(herr), s.tooLarge, herr)
	}
	return herr
}

// dedupeStream reserves each received message's key before handing it to
// the handler and skips messages that were already processed.
type dedupeStream struct {
	grpc.ServerStream
	g      *guard
	method string
	base   context.Context
	// sctx is the handler's view of the stream's context. A message's
	// context is sctx with its token, not a child cancelled when the
	// message is settled: a goroutine watching ss.Context() (a sender)
	// would see the stream end while it is open. Losing a message's lease
	// cancels sctx (lost).
	sctx    context.Context
	lost    context.CancelCauseFunc
	ctx     streamCtx
	pending *attempt
}

func (s *dedupeStream) Context() context.Context { return s.ctx.get() }

// settle completes the message the handler is done with.
func (s *dedupeStream) settle() {
	if p := s.pending; p != nil {
		s.pending = nil
		s.ctx.set(s.sctx)
		p.stop()
		p.finish(s.base, &idemv1.Result{}, false, nil)
	}
}

func (s *dedupeStream) RecvMsg(m any) error {
	s.settle()
	for {
		if err := s.ServerStream.RecvMsg(m); err != nil {
			return err
		}
		key, ok := s.g.o.streamKey(m)
		if !ok {
			return nil
		}
		pm, ok := m.(proto.Message)
		if !ok {
			return status.Error(codes.Internal, "idem: stream message is not a protobuf message")
		}
		fp, err := s.g.o.fingerprint(s.method, pm)
		if err != nil {
			return err
		}
		a, stored, err := s.g.begin(s.base, s.method, key, fp)
		switch {
		case errors.Is(err, errFailOpen):
			return nil
		case err != nil:
			return err
		case stored != nil:
			s.g.o.report(s.base, Event{Kind: EventReplayed, Method: s.method, Key: key})
			continue // already processed: the handler never sees it again
		}
		s.pending = a
		a.beat(s.base, s.lost)
		s.ctx.set(ContextWithToken(s.sctx, a.token))
		return nil
	}
}

func (g *guard) dedupeMessages(srv any, ss grpc.ServerStream, method string, handler grpc.StreamHandler) error {
	sctx, lost := context.WithCancelCause(ss.Context())
	defer lost(nil)
	s := &dedupeStream{ServerStream: ss, g: g, method: method, base: ss.Context(), sctx: sctx, lost: lost, ctx: streamCtx{ctx: sctx}}
	finished := false
	defer func() {
		if !finished && s.pending != nil { // the handler panicked
			s.pending.stop()
			s.pending.release(s.base, "handler panicked")
		}
	}()
	herr := handler(srv, s)
	finished = true
	if herr == nil {
		s.settle()
	} else if p := s.pending; p != nil {
		p.stop()
		p.release(s.base, "handler failed")
	}
	return herr
}
