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
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idemhq/idem/storage"
)

// audit12Server starts a private redis-server (no persistence) on a free
// port, so replication and restarts can be tested without touching the
// shared test Redis. It returns the port and a function that stops it.
func audit12Server(t *testing.T, port int, args ...string) func() {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
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
			return stop
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
	pp, rp := audit12Port(t), audit12Port(t)
	audit12Server(t, pp)
	audit12Server(t, rp, "--replicaof", "127.0.0.1", strconv.Itoa(pp), "--enable-debug-command", "yes")
	rc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(rp)})
	defer rc.Close()
	for i := 0; ; i++ {
		info, _ := rc.Info(ctx, "replication").Result()
		if strings.Contains(info, "master_link_status:up") {
			break
		}
		if i > 200 {
			t.Fatal("replica did not link")
		}
		time.Sleep(50 * time.Millisecond)
	}
	q := "wait_replicas=1&wait_timeout=200ms"
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
			// The replica stops acknowledging for 3s.
			sleep := make(chan error, 1)
			sc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(rp), ReadTimeout: 10 * time.Second})
			defer sc.Close()
			go func() { sleep <- sc.Do(ctx, "debug", "sleep", "3").Err() }()
			time.Sleep(300 * time.Millisecond)
			start := time.Now()

			cp := storage.CompleteParams{ID: rec.ID, Token: rec.Token, Result: &storage.Result{Body: []byte("ok")}, Retention: time.Hour}
			if _, err := a.Complete(ctx, cp); !errors.Is(err, storage.ErrUnavailable) {
				t.Fatalf("Complete with the replica asleep error = %v, want ErrUnavailable", err)
			}
			_, err = b.Complete(ctx, cp)
			asleep := time.Since(start) < 2500*time.Millisecond
			t.Logf("retry: err=%v after %v", err, time.Since(start))
			if err == nil && asleep {
				t.Errorf("retried Complete answered success while the replica could not have acked the completion (WAIT 1 claimed)")
			}
			rl, err := b.Release(ctx, rec.ID, rec.Token+0) // completed: LEASE_LOST, no durability claim
			_ = rl
			if err == nil {
				t.Errorf("Release of a completed record = nil error")
			}
			out, _, err := b.Reserve(ctx, reserveParams("k-"+mode))
			if err == nil && time.Since(start) < 2500*time.Millisecond {
				t.Logf("note: Reserve replay answered %v with success while the replica was asleep", out)
			}
			if err := <-sleep; err != nil {
				t.Fatalf("DEBUG SLEEP: %v", err)
			}
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
	pp, rp := audit12Port(t), audit12Port(t)
	audit12Server(t, pp)
	audit12Server(t, rp, "--replicaof", "127.0.0.1", strconv.Itoa(pp), "--enable-debug-command", "yes")
	rc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(rp)})
	defer rc.Close()
	for i := 0; ; i++ {
		info, _ := rc.Info(ctx, "replication").Result()
		if strings.Contains(info, "master_link_status:up") {
			break
		}
		if i > 200 {
			t.Fatal("replica did not link")
		}
		time.Sleep(50 * time.Millisecond)
	}
	q := "wait_replicas=1&wait_timeout=200ms&coalesce=0"
	a := audit12Open(ctx, t, pp, q)
	b := audit12Open(ctx, t, pp, q)
	if _, _, err := b.Reserve(ctx, reserveParams("warm")); err != nil {
		t.Fatal(err)
	}
	_, rec, err := a.Reserve(ctx, reserveParams("k"))
	if err != nil {
		t.Fatal(err)
	}
	sc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(rp), ReadTimeout: 10 * time.Second})
	defer sc.Close()
	sleep := make(chan error, 1)
	go func() { sleep <- sc.Do(ctx, "debug", "sleep", "3").Err() }()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if _, err := a.Release(ctx, rec.ID, rec.Token); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Release with the replica asleep error = %v, want ErrUnavailable", err)
	}
	if _, err := b.Release(ctx, rec.ID, rec.Token); err == nil && time.Since(start) < 2500*time.Millisecond {
		t.Errorf("retried Release answered success while the replica could not have acked the release")
	}
	<-sleep
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
			stop := audit12Server(t, port)
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
