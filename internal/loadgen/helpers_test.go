package loadgen

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

const defaultTestTimeout = 60 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startServer runs the real idem service over a memory store on loopback
// TCP and returns n connections to it.
func startServer(t *testing.T, n int) (*memory.Store, []grpc.ClientConnInterface) {
	t.Helper()
	store := memory.New()
	svc, err := server.New(store, server.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := server.NewGRPCServer(svc)
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	var conns []grpc.ClientConnInterface
	var closers []*grpc.ClientConn
	for range n {
		c, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		closers = append(closers, c)
	}
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
		gs.Stop()
		wg.Wait()
		svc.Close()
		store.Close()
	})
	return store, conns
}

func baseConfig(conns []grpc.ClientConnInterface) Config {
	return Config{
		Conns: conns, Target: "test", Op: OpReserveComplete, Mix: Mix{New: 100}, Concurrency: 4,
		Count: 100, Keyspace: 10, Payload: 16, Namespace: "bench", Timeout: 10 * time.Second,
	}
}

// lockedWriter serialises writes of the progress goroutine and the test.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
