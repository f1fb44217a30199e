// Command soak runs idemd (cmd/idemd, pebble store in a temporary
// directory) under a steady mixed load with short leases and retention, so
// that expiry, takeover and the background sweep are busy the whole time,
// and reports the subprocess's goroutines, open files and RSS every
// -report interval. Flat figures mean no leak.
//
//	go run ./reliability/soak -duration 1h
//
// The load is paced (-rate calls per second) rather than flat out: a soak
// looks for growth over time, not for throughput.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/reliability/harness"
)

func main() {
	var (
		duration = flag.Duration("duration", time.Hour, "how long to run")
		report   = flag.Duration("report", time.Minute, "how often to report")
		rate     = flag.Int("rate", 400, "calls per second (all workers together)")
		workers  = flag.Int("workers", 16, "concurrent clients")
		bin      = flag.String("idemd", "", "idemd binary (default: build ./cmd/idemd)")
		dataDir  = flag.String("data", "", "pebble data directory (default: a temporary one, removed at the end)")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *duration, *report, *rate, *workers, *bin, *dataDir); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, duration, report time.Duration, rate, workers int, bin, dataDir string) error {
	tmp, err := os.MkdirTemp("", "idem-soak")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if bin == "" {
		bins, err := harness.BuildIdemd(ctx, tmp, "./cmd/idemd")
		if err != nil {
			return err
		}
		bin = bins[0]
	}
	if dataDir == "" {
		dataDir = filepath.Join(tmp, "data")
	}
	addr, err := harness.FreeAddr()
	if err != nil {
		return err
	}
	metricsAddr, err := harness.FreeAddr()
	if err != nil {
		return err
	}
	d := &harness.Idemd{
		Bin: bin, Addr: addr, Store: "pebble://" + dataDir, Log: filepath.Join(tmp, "idemd.log"),
		Args: []string{"--metrics-listen", metricsAddr, "--default-retention", "2s", "--default-lease", "1s"},
	}
	if err := d.Start(ctx); err != nil {
		return err
	}
	defer d.Stop(30 * time.Second)
	conn, err := harness.Dial(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	rpc := idemv1.NewIdempotencyServiceClient(conn)
	admin := idemv1.NewAdminServiceClient(conn)

	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	var st stats
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	work := make(chan struct{})
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
			for range work {
				one(ctx, rpc, rng, &st)
			}
		}()
	}
	go func() {
		defer close(work)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				select {
				case work <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	start := time.Now()
	fmt.Printf("soak: idemd pid %d, pebble store %s, %d calls/s from %d clients, leases 1s, retention 1–2s, for %v\n", d.PID(), dataDir, rate, workers, duration)
	fmt.Printf("%8s %10s %8s %7s %6s %9s %8s %9s %7s\n", "elapsed", "calls", "refused", "failed", "gorout", "open_fds", "rss_mib", "data_mib", "live")
	sample := func() {
		g := goroutines(metricsAddr)
		fmt.Printf("%8s %10d %8d %7d %6s %9s %8s %9s %7s\n",
			time.Since(start).Round(time.Second), st.calls.Load(), st.refused.Load(), st.unexpected.Load(), g,
			fds(d.PID()), rss(d.PID()), dirMiB(dataDir), live(admin))
	}
	sample()
	rep := time.NewTicker(report)
	defer rep.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-d.Exited():
			return errors.New("idemd exited during the soak; see its log " + d.Log)
		case <-rep.C:
			sample()
		}
	}
	wg.Wait()
	sample()
	if n := st.unexpected.Load(); n > 0 {
		return fmt.Errorf("%d calls failed with an unexpected error, e.g. %v", n, st.lastErr.Load())
	}
	return nil
}

// stats count calls; refused are the answers short leases make expected
// (NOT_FOUND, LEASE_LOST), unexpected everything else that failed.
type stats struct {
	calls, refused, unexpected atomic.Int64
	lastErr                    atomic.Value
}

// one is a logical command: Reserve a mostly fresh key (some hot keys for
// contention and takeover after lease expiry), then Complete or Release,
// sometimes a Lookup of the key.
func one(ctx context.Context, rpc idemv1.IdempotencyServiceClient, rng *rand.Rand, st *stats) {
	key := fmt.Sprintf("k-%d", rng.Uint64())
	if rng.IntN(10) == 0 {
		key = fmt.Sprintf("hot-%d", rng.IntN(64))
	}
	retention := durationpb.New(time.Duration(1+rng.IntN(2)) * time.Second)
	call := func(f func(context.Context) error) bool {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := f(cctx)
		st.calls.Add(1)
		if err == nil || ending(ctx) {
			return err == nil
		}
		switch status.Code(err) {
		case codes.NotFound, codes.FailedPrecondition:
			st.refused.Add(1)
		default:
			st.unexpected.Add(1)
			st.lastErr.Store(err.Error())
		}
		return false
	}
	var resp *idemv1.ReserveResponse
	if !call(func(c context.Context) (err error) {
		resp, err = rpc.Reserve(c, &idemv1.ReserveRequest{Namespace: "soak", Key: key, Fingerprint: []byte("f"), Retention: retention})
		return err
	}) || resp.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		return
	}
	tok := resp.GetRecord().GetToken()
	switch p := rng.IntN(10); {
	case p < 6:
		call(func(c context.Context) error {
			_, err := rpc.Complete(c, &idemv1.CompleteRequest{Namespace: "soak", Key: key, Token: tok, Retention: retention,
				Result: &idemv1.Result{Body: make([]byte, 64+rng.IntN(512))}})
			return err
		})
	case p < 8:
		call(func(c context.Context) error {
			_, err := rpc.Release(c, &idemv1.ReleaseRequest{Namespace: "soak", Key: key, Token: tok})
			return err
		})
	default:
		// Abandoned: the lease runs out and the next Reserve takes over.
	}
	if rng.IntN(4) == 0 {
		call(func(c context.Context) error {
			_, err := rpc.Lookup(c, &idemv1.LookupRequest{Namespace: "soak", Key: key})
			return err
		})
	}
}

// ending reports whether the run is over or about to be: the server
// enforces the deadline gRPC sends along and may answer DEADLINE_EXCEEDED a
// moment before the client's own context notices.
func ending(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ctx.Err() != nil || ok && time.Until(dl) < time.Second
}

// goroutines reads go_goroutines from idemd's Prometheus endpoint.
func goroutines(addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return "?"
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			return v
		}
	}
	return "?"
}

// live is the number of unexpired records of the soak's namespace, which
// stays flat only if expiry works.
func live(admin idemv1.AdminServiceClient) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := admin.Stats(ctx, &idemv1.StatsRequest{Namespace: "soak"})
	if err != nil {
		return "?"
	}
	var n int64
	for _, r := range resp.GetRows() {
		n += r.GetCount()
	}
	return strconv.FormatInt(n, 10)
}

func fds(pid int) string {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return "?"
	}
	return strconv.Itoa(len(ents))
}

func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				return "?"
			}
			return strconv.FormatFloat(float64(kb)/1024, 'f', 1, 64)
		}
	}
	return "?"
}

func dirMiB(dir string) string {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64)
}
