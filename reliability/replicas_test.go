package reliability

import (
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestTwoReplicasOneWinner runs two idemd processes on one PostgreSQL schema,
// as stateless replicas behind a load balancer, and races 64 Reserves of one
// key split across them: the database decides, so exactly one wins.
func TestTwoReplicasOneWinner(t *testing.T) {
	ctx := testCtx(t)
	store := postgresStore(t)
	replicas := []*grpc.ClientConn{}
	for range 2 {
		d := startIdemd(t, store)
		conn, err := grpc.NewClient("passthrough:///"+d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		replicas = append(replicas, conn)
	}
	for round := range 5 {
		key := randomName("k")
		var wg sync.WaitGroup
		var mu sync.Mutex
		outcomes := map[idemv1.ReserveOutcome]int{}
		var errs []error
		for i := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := idemv1.NewIdempotencyServiceClient(replicas[i%2]).Reserve(ctx, &idemv1.ReserveRequest{
					Namespace: "replicas", Key: key, Fingerprint: []byte("f"),
				})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				outcomes[resp.GetOutcome()]++
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("round %d: %d Reserves failed, first: %v", round, len(errs), errs[0])
		}
		if got := outcomes[idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED]; got != 1 {
			t.Errorf("round %d: RESERVED %d times across two replicas, want exactly 1 (outcomes %v)", round, got, outcomes)
		}
		if got := outcomes[idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS]; got != 63 {
			t.Errorf("round %d: IN_PROGRESS %d times, want 63 (outcomes %v)", round, got, outcomes)
		}
	}
}
