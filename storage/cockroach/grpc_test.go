package cockroach

import (
	"fmt"
	"net"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
)

// startReplica serves idem's gRPC API over a store of its own on storeURL,
// as one idemd replica would, and returns a client of it.
func startReplica(t testing.TB, storeURL string) idemv1.IdempotencyServiceClient {
	t.Helper()
	s := openTest(t, storeURL)
	svc, err := server.New(s, server.WithLogger(quiet))
	if err != nil {
		t.Fatalf("server.New() error = %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := server.NewGRPCServer(svc)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() error = %v", err)
	}
	t.Cleanup(func() {
		conn.Close()
		svc.Close()
		srv.Stop()
		<-served
		s.Close()
	})
	return idemv1.NewIdempotencyServiceClient(conn)
}

func reserveReq(key string) *idemv1.ReserveRequest {
	return &idemv1.ReserveRequest{Tenant: "t", Namespace: "/x.v1.X/Y", Key: key, Fingerprint: pairFingerprint, LeaseTtl: durationpb.New(time.Minute), Retention: durationpb.New(time.Hour)}
}

// TestReplicasOverGRPC: two idem servers on one database, 64 concurrent
// Reserves of one key split across them, exactly one RESERVED.
func TestReplicasOverGRPC(t *testing.T) {
	ctx := testCtx(t)
	u := migratedURL(t, postgresURL(t))
	replicas := []idemv1.IdempotencyServiceClient{startReplica(t, u), startReplica(t, u)}
	var mu sync.Mutex
	counts := map[idemv1.ReserveOutcome]int{}
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := replicas[i%2].Reserve(ctx, reserveReq("one-key"))
			if err != nil {
				t.Errorf("Reserve() error = %v", err)
				return
			}
			mu.Lock()
			counts[resp.GetOutcome()]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED] != 1 || counts[idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS] != 63 {
		t.Errorf("outcomes = %v, want 1 RESERVED and 63 IN_PROGRESS", counts)
	}
}

// TestOutageOverGRPC: while the database is cut off the server answers
// UNAVAILABLE; it recovers by itself, and a Complete it acknowledged
// before is still there.
func TestOutageOverGRPC(t *testing.T) {
	ctx := testCtx(t)
	direct := migratedURL(t, postgresURL(t))
	du, _ := url.Parse(direct)
	px := newProxy(t, du.Host)
	pu := *du
	pu.Host = px.ln.Addr().String()
	cli := startReplica(t, withParams(t, pu.String(), ParamConnectRetry, "0"))

	r, err := cli.Reserve(ctx, reserveReq("before"))
	if err != nil {
		t.Fatalf("Reserve() error = %v", err)
	}
	if _, err := cli.Complete(ctx, &idemv1.CompleteRequest{Tenant: "t", Namespace: "/x.v1.X/Y", Key: "before", Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: []byte("done")}}); err != nil {
		t.Fatalf("Complete() error = %v", err)
	}
	px.setCut(true)
	_, err = cli.Reserve(ctx, reserveReq("during"))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Reserve() during the outage = %v, want code Unavailable", err)
	}
	px.setCut(false)
	for {
		_, err := cli.Reserve(ctx, reserveReq("after"))
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			t.Fatalf("Reserve() after the outage = %v, want recovery", err)
		}
		time.Sleep(10 * time.Millisecond) // polling for the pool to reconnect
	}
	got, err := cli.Reserve(ctx, reserveReq("before"))
	if err != nil {
		t.Fatal(err)
	}
	if got.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED || string(got.GetRecord().GetResult().GetBody()) != "done" {
		t.Errorf("Reserve(before) after the outage = %v, want COMPLETED with body done", got)
	}
}

// BenchmarkGRPCPairs is the figure: Reserve+Complete pairs per
// second through gRPC with 50 concurrent callers, one server, one database.
func BenchmarkGRPCPairs(b *testing.B) {
	u := migratedURL(b, postgresURL(b))
	cli := startReplica(b, withParams(b, u, "pool_max_conns", fmt.Sprint(pairCallers)))
	ctx := testCtx(b)
	res := &idemv1.Result{Body: pairResult.Body, Metadata: pairResult.Metadata}
	var seq atomic.Int64
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((pairCallers + procs - 1) / procs)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := fmt.Sprintf("grpc-%d", seq.Add(1))
			r, err := cli.Reserve(ctx, reserveReq(key))
			if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
				b.Errorf("Reserve() = %v, %v", r, err)
				return
			}
			if _, err := cli.Complete(ctx, &idemv1.CompleteRequest{Tenant: "t", Namespace: "/x.v1.X/Y", Key: key, Token: r.GetRecord().GetToken(), Result: res, Retention: durationpb.New(pairRetention)}); err != nil {
				b.Errorf("Complete() error = %v", err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}
