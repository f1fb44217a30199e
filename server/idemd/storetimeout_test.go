package idemd

import (
	"context"
	"flag"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
)

func TestStoreTimeoutFlag(t *testing.T) {
	if got := DefaultConfig().StoreTimeout; got != server.DefaultStoreTimeout {
		t.Errorf("default StoreTimeout = %v, want %v", got, server.DefaultStoreTimeout)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want time.Duration
	}{
		{[]string{"--store-timeout", "3s"}, nil, 3 * time.Second},
		{nil, map[string]string{"IDEM_STORE_TIMEOUT": "250ms"}, 250 * time.Millisecond},
		{[]string{"--store-timeout", "1s"}, map[string]string{"IDEM_STORE_TIMEOUT": "2s"}, time.Second},
		{[]string{"--store-timeout", "0"}, nil, 0},
	} {
		c, err := parse(t, tt.args, tt.env)
		if err != nil {
			t.Fatalf("%v %v: parse error = %v", tt.args, tt.env, err)
		}
		if c.StoreTimeout != tt.want {
			t.Errorf("%v %v: StoreTimeout = %v, want %v", tt.args, tt.env, c.StoreTimeout, tt.want)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%v %v: Validate() = %v", tt.args, tt.env, err)
		}
	}
	c, err := parse(t, []string{"--store-timeout", "-1s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--store-timeout is negative") {
		t.Errorf("Validate() of a negative --store-timeout = %v, want it refused", err)
	}
}

// hungStore stands for a store that stopped answering: Reserve blocks
// until its context ends.
type hungStore struct{ storage.Store }

func (h hungStore) Reserve(ctx context.Context, _ storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	<-ctx.Done()
	return 0, nil, ctx.Err()
}

// hangExt hands the server a hung store in place of idemd's.
type hangExt struct{}

func (hangExt) RegisterFlags(*flag.FlagSet) {}
func (hangExt) Setup(_ context.Context, s *Setup) error {
	s.Store = hungStore{s.Store}
	return nil
}

// idemd passes --store-timeout to the server: a call without a deadline
// against a hung store ends with UNAVAILABLE naming the flag's value.
func TestServeBoundsStoreOperations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	cfg := memoryConfig()
	cfg.StoreTimeout = 50 * time.Millisecond
	sctx, stop := context.WithCancel(ctx)
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- Serve(sctx, cfg, slog.New(&addrHandler{addr: addrc}), hangExt{}) }()
	defer func() {
		stop()
		if err := <-errc; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-errc:
		errc <- err
		t.Fatalf("Serve() = %v before serving", err)
	}
	// No deadline of its own, as grpcurl's; the test's ends it if idemd does not.
	call, end := context.WithCancel(context.Background())
	defer end()
	defer context.AfterFunc(ctx, end)()
	_, err := dial(t, addr).Reserve(call, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || st.Message() != "idem: store did not answer within --store-timeout (50ms)" {
		t.Errorf("Reserve() on a hung store = %v, want UNAVAILABLE naming --store-timeout (50ms)", err)
	}
}
