package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/idemhq/idem/client"
	paymentsv1 "github.com/idemhq/idem/examples/payments/proto/payments/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

const defaultTestTimeout = 90 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// proxy forwards TCP connections to a backend and, at random, cuts a
// connection right after a chunk of the request went through (the server
// acts, its answer is lost) or instead of forwarding a chunk of the answer.
type proxy struct {
	l        net.Listener
	backend  string
	dropResp float64 // chance per server→client chunk
	dropReq  float64 // chance per client→server chunk
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
	cuts     atomic.Int64
	chunks   atomic.Int64
}

func startProxy(t *testing.T, backend string, dropReq, dropResp float64) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, backend: backend, dropReq: dropReq, dropResp: dropResp, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.backend)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[b] = struct{}{}, struct{}{}
		p.mu.Unlock()
		cut := func() {
			c.Close()
			b.Close()
		}
		p.wg.Add(2)
		go p.pipe(b, c, p.dropReq, true, cut)
		go p.pipe(c, b, p.dropResp, false, cut)
	}
}

// pipe copies src to dst. forwardFirst decides whether a doomed chunk is
// delivered before the cut (a request the server will act on) or not (an
// answer that never arrives).
func (p *proxy) pipe(dst, src net.Conn, drop float64, forwardFirst bool, cut func()) {
	defer p.wg.Done()
	defer cut()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			// Under load gRPC's frames coalesce into few large reads, so
			// chance alone may cut nothing: the tenth chunk is cut when
			// none was before.
			doomed := rand.Float64() < drop || (drop > 0 && p.chunks.Add(1) == 10 && p.cuts.Load() == 0)
			if doomed && !forwardFirst {
				p.cuts.Add(1)
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if doomed {
				p.cuts.Add(1)
				time.Sleep(5 * time.Millisecond) // let the server read it before the cut
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) close() {
	p.l.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// world is idemd (memory store) on TCP, the payments service on TCP behind
// the idem interceptors, and a lossy proxy in front of it.
type world struct {
	ledger *Ledger
	svc    *paymentsService
	proxy  *proxy
	conn   *grpc.ClientConn
	pc     paymentsv1.PaymentsServiceClient
	events *client.Counters
}

func startWorld(t *testing.T, dropReq, dropResp float64) *world {
	t.Helper()
	return startWorldClock(t, nil, dropReq, dropResp)
}

// startWorldClock is startWorld with idem's records timed by clk (nil: the
// real clock).
func startWorldClock(t *testing.T, clk clockwork.Clock, dropReq, dropResp float64) *world {
	t.Helper()
	store := memory.New(memory.WithLogger(quiet), memory.WithClock(clk))
	idemSrv, err := server.New(store, server.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	il, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	igs := grpc.NewServer()
	idemSrv.Register(igs)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = igs.Serve(il) }()
	idemClient, err := client.New("passthrough:///"+il.Addr().String(), client.WithInsecure(), client.WithCache(1000))
	if err != nil {
		t.Fatal(err)
	}

	w := &world{ledger: NewLedger(), events: &client.Counters{}}
	w.svc = newPaymentsService(w.ledger)
	gs := newServer(idemClient, w.svc, client.WithLogger(quiet), client.WithCounters(w.events), client.WithWait(200*time.Millisecond))
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = gs.Serve(pl) }()
	w.proxy = startProxy(t, pl.Addr().String(), dropReq, dropResp)

	w.conn, err = grpc.NewClient("passthrough:///"+w.proxy.l.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Each cut grows gRPC's reconnect backoff (1s base, up to 2 min),
		// which would stall the hammer for no purpose.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond}}),
		grpc.WithChainUnaryInterceptor(
			client.UnaryClientInterceptor(),
			retry.UnaryClientInterceptor(
				retry.WithMax(200),
				retry.WithPerRetryTimeout(400*time.Millisecond),
				// INTERNAL and UNKNOWN are what a crashed handler answers; the
				// key was released, so retrying with it is safe.
				retry.WithCodes(codes.Unavailable, codes.Aborted, codes.ResourceExhausted, codes.Internal, codes.Unknown, codes.Canceled),
				// Bounded: unbounded doubling makes the 12th retry wait 8s.
				retry.WithBackoff(retry.BackoffExponentialWithJitterBounded(2*time.Millisecond, 0.5, 100*time.Millisecond)),
			),
		))
	if err != nil {
		t.Fatal(err)
	}
	w.pc = paymentsv1.NewPaymentsServiceClient(w.conn)
	t.Cleanup(func() {
		w.conn.Close()
		w.proxy.close()
		gs.Stop()
		igs.Stop()
		wg.Wait()
		idemClient.Close()
		idemSrv.Close()
		store.Close()
	})
	return w
}

// answer is what a caller ended up with for a key.
type answer struct {
	resp *paymentsv1.ChargeResponse
	code codes.Code
	msg  string
}

func (a answer) String() string {
	if a.code != codes.OK {
		return fmt.Sprintf("%v: %s", a.code, a.msg)
	}
	return a.resp.String()
}

func (a answer) equal(b answer) bool {
	return a.code == b.code && a.msg == b.msg && proto.Equal(a.resp, b.resp)
}

// installFaults crashes or stalls the first attempt of some keys: before or
// after the ledger write, by panic or by hanging until the call is
// cancelled. It returns how many attempts per key wrote to the ledger.
func installFaults(w *world, plan map[string]string) *sync.Map {
	var attempts, posts sync.Map
	first := func(key, phase string) (string, bool) {
		if plan[key] == "" || len(plan[key]) < len(phase) || plan[key][len(plan[key])-len(phase):] != phase {
			return "", false
		}
		n, _ := attempts.LoadOrStore(key+phase, new(atomic.Int64))
		if n.(*atomic.Int64).Add(1) != 1 {
			return "", false
		}
		return plan[key][:len(plan[key])-len(phase)], true
	}
	hit := func(ctx context.Context, key, phase string) {
		kind, ok := first(key, phase)
		if !ok {
			return
		}
		switch kind {
		case "panic-":
			panic("payments: simulated crash " + phase + " for " + key)
		case "hang-":
			<-ctx.Done() // cancelled mid-way by the caller's per-attempt deadline or a cut connection
		}
	}
	w.svc.beforePost = func(ctx context.Context, key string) { hit(ctx, key, "before") }
	w.svc.afterPost = func(ctx context.Context, key string) {
		n, _ := posts.LoadOrStore(key, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		hit(ctx, key, "after")
	}
	return &posts
}

// TestChargesExactlyOnce hammers the service through the lossy proxy:
// duplicate deliveries race, retries follow lost answers and timeouts, and
// first attempts crash or hang before or after the ledger write. Every key
// must be charged at most once (once unless the request is invalid) and
// every caller of a key must end with the same answer. The ledger's unique
// key alone would keep the charges single, so the test also checks that
// idem let a second attempt reach the ledger only after a crash that
// followed the write.
func TestChargesExactlyOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	w := startWorld(t, 0.02, 0.05)
	const keys, callersPerKey = 60, 3
	plan := map[string]string{}
	faults := []string{"", "panic-before", "panic-after", "hang-before", "hang-after"}
	for i := range keys {
		plan[fmt.Sprintf("order-%d", i)] = faults[i%len(faults)]
	}
	posts := installFaults(w, plan)

	answers := make([][]answer, keys)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range keys {
		key := fmt.Sprintf("order-%d", i)
		amount := int64(100 + i)
		if i%7 == 3 {
			amount = 0 // invalid: the error is the stored answer
		}
		for c := range callersPerKey {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if c == callersPerKey-1 {
					time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) // a late redelivery
				}
				req := &paymentsv1.ChargeRequest{
					Account: fmt.Sprintf("acct-%d", i%4), AmountCents: amount, Currency: "EUR",
					SentAt: timestamppb.Now(), // differs per caller; excluded from the fingerprint
				}
				resp, err := w.pc.Charge(client.WithKey(ctx, key), req)
				a := answer{resp: resp, code: status.Code(err), msg: status.Convert(err).Message()}
				mu.Lock()
				answers[i] = append(answers[i], a)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("hammer did not finish: %v", ctx.Err())
	}

	entries := map[string][]entry{}
	for _, e := range w.ledger.Entries() {
		entries[e.Key] = append(entries[e.Key], e)
	}
	for i := range keys {
		key := fmt.Sprintf("order-%d", i)
		as := answers[i]
		for _, a := range as[1:] {
			if !a.equal(as[0]) {
				t.Errorf("%s: callers saw different answers: %v vs %v", key, as[0], a)
			}
		}
		invalid := i%7 == 3
		wantPosts := int64(1)
		switch {
		case invalid:
			wantPosts = 0
		case plan[key] == "panic-after":
			wantPosts = 2 // the crashed attempt wrote; its retry finds the entry
		}
		var gotPosts int64
		if n, ok := posts.Load(key); ok {
			gotPosts = n.(*atomic.Int64).Load()
		}
		if gotPosts != wantPosts {
			t.Errorf("%s (%q): %d attempts wrote to the ledger, want %d (complete failures: %d, heartbeat failures: %d)",
				key, plan[key], gotPosts, wantPosts, w.events.CompleteFailed.Load(), w.events.HeartbeatFailed.Load())
		}
		switch {
		case invalid && (as[0].code != codes.InvalidArgument || len(entries[key]) != 0):
			t.Errorf("%s (invalid): answer %v with %d ledger entries, want INVALID_ARGUMENT and none", key, as[0], len(entries[key]))
		case !invalid && len(entries[key]) != 1:
			t.Errorf("%s: %d ledger entries, want exactly 1 (answer %v)", key, len(entries[key]), as[0])
		case !invalid && (as[0].code != codes.OK || as[0].resp.GetChargeId() != entries[key][0].ChargeID):
			t.Errorf("%s: answer %v, want the ledger's charge %s", key, as[0], entries[key][0].ChargeID)
		}
		delete(entries, key)
	}
	for k, es := range entries {
		t.Errorf("ledger has %d entries for unexpected key %q", len(es), k)
	}
	t.Logf("proxy cuts: %d; replays: %d; complete failures: %d; release failures: %d",
		w.proxy.cuts.Load(), w.events.Replayed.Load(), w.events.CompleteFailed.Load(), w.events.ReleaseFailed.Load())
	if w.proxy.cuts.Load() == 0 {
		t.Errorf("the proxy never cut a connection; the test exercised nothing")
	}
}

func TestKeysAndReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	w := startWorld(t, 0, 0)
	raw, err := grpc.NewClient("passthrough:///"+w.proxy.l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	pc := paymentsv1.NewPaymentsServiceClient(raw)
	_, err = pc.Charge(ctx, &paymentsv1.ChargeRequest{Account: "a", AmountCents: 1, Currency: "EUR"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Charge without a key: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := w.pc.Charge(ctx, &paymentsv1.ChargeRequest{Account: "a", AmountCents: 5, Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
	bal, err := pc.GetBalance(ctx, &paymentsv1.GetBalanceRequest{Account: "a"}) // NO_SIDE_EFFECTS: no key needed
	if err != nil || bal.GetBalanceCents() != 5 || bal.GetCharges() != 1 {
		t.Errorf("GetBalance() = %v, %v; want 5 cents in 1 charge", bal, err)
	}
}

// TestDuplicatesRunHandlerOnce: concurrent deliveries of one Charge run the
// handler once; the others wait and get its answer replayed. The ledger's
// own per-key uniqueness would hide a second run from TestChargesExactlyOnce.
func TestDuplicatesRunHandlerOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	w := startWorld(t, 0, 0)
	var runs atomic.Int64
	w.svc.beforePost = func(context.Context, string) {
		runs.Add(1)
		time.Sleep(50 * time.Millisecond) // the duplicates arrive while it runs
	}
	const callers = 8
	answers := make([]answer, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := w.pc.Charge(client.WithKey(ctx, "dup-1"), &paymentsv1.ChargeRequest{Account: "a", AmountCents: 7, Currency: "EUR"})
			answers[i] = answer{resp: resp, code: status.Code(err), msg: status.Convert(err).Message()}
		}()
	}
	wg.Wait()
	for _, a := range answers {
		if a.code != codes.OK || !a.equal(answers[0]) {
			t.Errorf("answer %v, want OK and the same for every caller (first: %v)", a, answers[0])
		}
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("handler ran %d times for one key, want 1", n)
	}
	if got := w.events.Replayed.Load(); got != callers-1 {
		t.Errorf("replays = %d, want %d", got, callers-1)
	}
}

// TestKeyReusedAfterRetention: once idem forgot a key (its retention
// passed), a different charge under it reaches the handler again. The
// ledger still holds the first charge for the key, and must refuse the
// second rather than answer with the first (another account's balance).
func TestKeyReusedAfterRetention(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	clk := clockwork.NewFakeClock()
	w := startWorldClock(t, clk, 0, 0)
	first, err := w.pc.Charge(client.WithKey(ctx, "reused"), &paymentsv1.ChargeRequest{Account: "alice", AmountCents: 100, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(25 * time.Hour) // past idemd's default retention of 24h

	_, err = w.pc.Charge(client.WithKey(ctx, "reused"), &paymentsv1.ChargeRequest{Account: "bob", AmountCents: 200, Currency: "EUR"})
	if status.Code(err) != codes.FailedPrecondition || reason(err) != client.ReasonKeyReused {
		t.Errorf("Charge(bob) with alice's expired key: %v, want FAILED_PRECONDITION %s", err, client.ReasonKeyReused)
	}
	if bal, n := w.ledger.Balance("bob"); bal != 0 || n != 0 {
		t.Errorf("bob's balance = %d in %d charges, want none", bal, n)
	}
	clk.Advance(25 * time.Hour) // idem forgets bob's refusal too
	again, err := w.pc.Charge(client.WithKey(ctx, "reused"), &paymentsv1.ChargeRequest{Account: "alice", AmountCents: 100, Currency: "EUR"})
	if err != nil || !proto.Equal(again, first) {
		t.Errorf("Charge(alice) retried after retention = %v, %v; want the first charge %v", again, err, first)
	}
}

func reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetReason()
		}
	}
	return ""
}
