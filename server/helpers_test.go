package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

const defaultTestTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// faultStore is the memory store with errors injected on demand, to drive
// the error mapping and the health checker.
type faultStore struct {
	storage.Store
	mu         sync.Mutex
	reserveErr error
	pingErr    error
}

func (f *faultStore) setReserveErr(err error) {
	f.mu.Lock()
	f.reserveErr = err
	f.mu.Unlock()
}

func (f *faultStore) setPingErr(err error) {
	f.mu.Lock()
	f.pingErr = err
	f.mu.Unlock()
}

func (f *faultStore) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	f.mu.Lock()
	err := f.reserveErr
	f.mu.Unlock()
	if err != nil {
		return 0, nil, err
	}
	return f.Store.Reserve(ctx, p)
}

func (f *faultStore) Ping(ctx context.Context) error {
	f.mu.Lock()
	err := f.pingErr
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.Store.Ping(ctx)
}

// testEnv is a Service on a memory store behind a bufconn gRPC server.
type testEnv struct {
	clock  *clockwork.FakeClock
	store  *faultStore
	svc    *Service
	idem   idemv1.IdempotencyServiceClient
	admin  idemv1.AdminServiceClient
	health healthpb.HealthClient
	conn   *grpc.ClientConn
}

// healthTickers is the number of timers the health checker adds to the
// store's fake clock: none, it has a clock of its own.
const healthTickers = 0

func newEnv(t *testing.T, opts ...Option) *testEnv {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	mem := memory.New(memory.WithClock(clock), memory.WithSweepInterval(0))
	fs := &faultStore{Store: mem}
	return newEnvOn(t, clock, fs, opts...)
}

func newEnvOn(t *testing.T, clock *clockwork.FakeClock, fs *faultStore, opts ...Option) *testEnv {
	t.Helper()
	svc, err := New(fs, append([]Option{WithClock(clock), WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	lis := bufconn.Listen(1 << 20)
	srv := NewGRPCServer(svc)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20)),
	)
	if err != nil {
		t.Fatalf("grpc.NewClient() error = %v", err)
	}
	t.Cleanup(func() {
		conn.Close()
		svc.Close()
		srv.Stop()
		<-served
		fs.Store.Close()
	})
	return &testEnv{
		clock:  clock,
		store:  fs,
		svc:    svc,
		idem:   idemv1.NewIdempotencyServiceClient(conn),
		admin:  idemv1.NewAdminServiceClient(conn),
		health: healthpb.NewHealthClient(conn),
		conn:   conn,
	}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// snapshot reads every live record of a namespace straight from the store.
func (e *testEnv) snapshot(ctx context.Context, t *testing.T, tenant, ns string) []*storage.Record {
	t.Helper()
	var all []*storage.Record
	after := ""
	for {
		recs, more, err := e.store.List(ctx, storage.ListParams{Tenant: tenant, Namespace: ns, After: after, Limit: 1000})
		if err != nil {
			t.Fatalf("List() error = %v", err)
		}
		all = append(all, recs...)
		if !more || len(recs) == 0 {
			return all
		}
		after = recs[len(recs)-1].Key
	}
}

func assertUnchanged(t *testing.T, before, after []*storage.Record) {
	t.Helper()
	if !reflect.DeepEqual(before, after) {
		t.Errorf("stored records changed:\nbefore %+v\nafter  %+v", before, after)
	}
}

// badFields returns the fields of an INVALID_ARGUMENT's BadRequest.
func badFields(t *testing.T, err error) []string {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a status", err)
	}
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

func errorInfo(err error) *errdetails.ErrorInfo {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei
		}
	}
	return nil
}

func retryInfo(err error) *errdetails.RetryInfo {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri
		}
	}
	return nil
}

var errBoom = errors.New("pq: relation \"secret_table\" does not exist")
