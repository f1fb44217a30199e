package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idemhq/idem/internal/testenv"
	"github.com/idemhq/idem/storage"
)

// audit12Server starts a private redis-server (no persistence) on a free
// port, so replication and restarts can be tested without touching the
// shared test Redis. It returns a function that stops it, and its process.
func audit12Server(t *testing.T, port int, args ...string) (func(), *os.Process) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("redis-server is not installed: %v", err)
		}
		t.Skip("redis-server not installed")
	}
	all := append([]string{"--port", strconv.Itoa(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--dir", t.TempDir()}, args...)
	cmd := exec.Command(bin, all...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	t.Cleanup(stop)
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port)})
	defer c.Close()
	for i := 0; ; i++ {
		if c.Ping(context.Background()).Err() == nil {
			return stop, cmd.Process
		}
		if i > 100 {
			t.Fatalf("redis-server on %d did not start", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func audit12Port(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func audit12Open(ctx context.Context, t *testing.T, port int, q string) *Store {
	t.Helper()
	st, err := storage.Open(ctx, fmt.Sprintf("redis://127.0.0.1:%d/0?%s", port, q), storage.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st.(*Store)
}

// audit12Freeze stops p (SIGSTOP), so a replica acknowledges nothing until
// the returned function resumes it; the test's end resumes it too.
func audit12Freeze(t *testing.T, p *os.Process) func() {
	t.Helper()
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	thaw := func() { once.Do(func() { _ = p.Signal(syscall.SIGCONT) }) }
	t.Cleanup(thaw)
	return thaw
}

// audit12Replicated starts a private primary and a replica of it, waits
// for the link, and returns the primary's port and the replica's process.
func audit12Replicated(ctx context.Context, t *testing.T) (int, *os.Process) {
	t.Helper()
	pp, rp := audit12Port(t), audit12Port(t)
	audit12Server(t, pp)
	_, replica := audit12Server(t, rp, "--replicaof", "127.0.0.1", strconv.Itoa(pp))
	rc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(rp)})
	defer rc.Close()
	for i := 0; ; i++ {
		info, _ := rc.Info(ctx, "replication").Result()
		if strings.Contains(info, "master_link_status:up") {
			return pp, replica
		}
		if i > 200 {
			t.Fatal("replica did not link")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAudit12WaitRetryDoesNotClaimDurability: a Complete whose WAIT came
// back short fails with ErrUnavailable. Its retry — here through a second
// idemd replica (another store, another connection), as a client's retry
// usually lands — finds the record already completed with the same result,
// writes nothing, and so its WAIT covers none of the write it answers for:
// Redis's WAIT counts the replicas that reached the connection's own last
// write, and a connection that did not write waits for nothing. The retry
// must not answer success while the replica is known not to have acked.
func TestAudit12WaitRetryDoesNotClaimDurability(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pp, replica := audit12Replicated(ctx, t)
	q := "wait_replicas=1&wait_timeout=1s"
	for _, mode := range []string{"coalesce=0", "coalesce=2"} {
		t.Run(mode, func(t *testing.T) {
			a := audit12Open(ctx, t, pp, q+"&"+mode)
			b := audit12Open(ctx, t, pp, q+"&"+mode)
			// Both stores' connections have written and been acked once.
			for _, s := range []*Store{a, b} {
				if _, _, err := s.Reserve(ctx, reserveParams("warm-"+mode+fmt.Sprint(s == a))); err != nil {
					t.Fatalf("Reserve with a live replica: %v", err)
				}
			}
			_, rec, err := a.Reserve(ctx, reserveParams("k-"+mode))
			if err != nil {
				t.Fatalf("Reserve with a live replica: %v", err)
			}
			// The replica stops acknowledging until thawed.
			thaw := audit12Freeze(t, replica)
			cp := storage.CompleteParams{ID: rec.ID, Token: rec.Token, Result: &storage.Result{Body: []byte("ok")}, Retention: time.Hour}
			if _, err := a.Complete(ctx, cp); !errors.Is(err, storage.ErrUnavailable) {
				t.Fatalf("Complete with the replica stopped error = %v, want ErrUnavailable", err)
			}
			if _, err := b.Complete(ctx, cp); err == nil {
				t.Errorf("retried Complete answered success while the replica could not have acked the completion (WAIT 1 claimed)")
			}
			if _, err := b.Release(ctx, rec.ID, rec.Token); err == nil {
				t.Errorf("Release of a completed record = nil error")
			}
			thaw()
			// Once the replica is back, the retry succeeds.
			if _, err := b.Complete(ctx, cp); err != nil {
				t.Fatalf("retried Complete with the replica back: %v", err)
			}
		})
	}
}

// TestAudit12ReleaseRetryDoesNotClaimDurability: Release's retry, like
// Complete's.
func TestAudit12ReleaseRetryDoesNotClaimDurability(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pp, replica := audit12Replicated(ctx, t)
	q := "wait_replicas=1&wait_timeout=1s&coalesce=0"
	a := audit12Open(ctx, t, pp, q)
	b := audit12Open(ctx, t, pp, q)
	if _, _, err := b.Reserve(ctx, reserveParams("warm")); err != nil {
		t.Fatal(err)
	}
	_, rec, err := a.Reserve(ctx, reserveParams("k"))
	if err != nil {
		t.Fatal(err)
	}
	audit12Freeze(t, replica)
	if _, err := a.Release(ctx, rec.ID, rec.Token); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Release with the replica stopped error = %v, want ErrUnavailable", err)
	}
	if _, err := b.Release(ctx, rec.ID, rec.Token); err == nil {
		t.Errorf("retried Release answered success while the replica could not have acked the release")
	}
}

// TestAudit12RedisRestart: after the Redis process restarts (script cache
// and every connection gone), an open store answers again without the
// caller doing anything: NOSCRIPT is handled, dead pooled connections are
// dropped. Only the calls made while Redis is down fail (ErrUnavailable).
func TestAudit12RedisRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := audit12Port(t)
	for _, mode := range []string{"coalesce=0", "coalesce=2"} {
		t.Run(mode, func(t *testing.T) {
			stop, _ := audit12Server(t, port)
			s := audit12Open(ctx, t, port, mode+"&pool_size=4")
			for i := range 8 { // fill the pool
				if _, _, err := s.Reserve(ctx, reserveParams("a"+strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			stop()
			if _, _, err := s.Reserve(ctx, reserveParams("down")); !errors.Is(err, storage.ErrUnavailable) {
				t.Errorf("Reserve with Redis down error = %v, want ErrUnavailable", err)
			}
			audit12Server(t, port)
			for i := range 8 {
				out, _, err := s.Reserve(ctx, reserveParams("b"+strconv.Itoa(i)))
				if err != nil || out != storage.OutcomeReserved {
					t.Fatalf("Reserve #%d after restart = %v, %v; want RESERVED, nil", i, out, err)
				}
			}
			rs, err := s.BatchReserve(ctx, []storage.ReserveParams{reserveParams("c1"), reserveParams("c2")})
			if err != nil || rs[0].Err != nil || rs[1].Err != nil {
				t.Fatalf("BatchReserve after restart = %v, %v", rs, err)
			}
		})
	}
}
