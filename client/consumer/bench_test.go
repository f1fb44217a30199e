package consumer_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/pebble"
)

const benchBatch = 500

func pebbleService(b *testing.B) client.Service {
	b.Helper()
	st, err := pebble.Open(b.TempDir(), pebble.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		b.Fatalf("pebble.Open() = %v", err)
	}
	srv, err := server.New(st, server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		b.Fatalf("server.New() = %v", err)
	}
	b.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return client.Local(srv)
}

func benchMessages(round int) []consumer.Message {
	msgs := make([]consumer.Message, benchBatch)
	for i := range msgs {
		msgs[i] = consumer.Message{ID: fmt.Sprintf("m-%d-%d", round, i)}
	}
	return msgs
}

// BenchmarkHandle: 500 new messages per op, one Reserve and one Complete
// each.
func BenchmarkHandle(b *testing.B) {
	c := consumer.New(pebbleService(b))
	ctx := context.Background()
	ok := func(context.Context) error { return nil }
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, m := range benchMessages(i) {
			if _, err := c.Handle(ctx, "bench", m.ID, nil, ok); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkHandleBatch: the same 500 messages per op through HandleBatch,
// one BatchReserve and one BatchComplete.
func BenchmarkHandleBatch(b *testing.B) {
	c := consumer.New(pebbleService(b))
	ctx := context.Background()
	ok := func(_ context.Context, batch []consumer.Message) []error { return make([]error, len(batch)) }
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.HandleBatch(ctx, "bench", benchMessages(i), ok); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "msgs/s")
}
