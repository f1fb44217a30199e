package loadgen

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
)

// phaseLog records which kind of call each Invoke was, in order.
type phaseLog struct {
	grpc.ClientConnInterface
	mu  *sync.Mutex
	seq *[]string
}

func (p phaseLog) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	kind := "idem"
	if strings.HasPrefix(method, "/grpc.health.") {
		kind = "floor"
	}
	p.mu.Lock()
	if s := *p.seq; len(s) == 0 || s[len(s)-1] != kind {
		*p.seq = append(s, kind)
	}
	p.mu.Unlock()
	return p.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
}

// Rounds alternate which phase goes first, so what one phase leaves behind
// in idemd (its GC, a store's flushes) does not always land on the floor.
func TestRoundsAlternateOrder(t *testing.T) {
	ctx := testContext(t)
	_, conns := startServer(t, 1)
	var mu sync.Mutex
	var seq []string
	conns[0] = phaseLog{conns[0], &mu, &seq}
	cfg := baseConfig(conns)
	cfg.Op, cfg.Floor, cfg.Rounds, cfg.Count = OpReserve, true, 3, 20
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// floor idem | idem floor | floor idem
	if got, want := strings.Join(seq, " "), "floor idem floor idem"; got != want {
		t.Errorf("calls ran in phases %q, want %q", got, want)
	}
	if len(rep.Rounds) != 3 || rep.Rounds[0].IdemFirst || !rep.Rounds[1].IdemFirst || rep.Rounds[2].IdemFirst {
		t.Errorf("rounds = %+v, want the second alone marked idem_first", rep.Rounds)
	}
}
