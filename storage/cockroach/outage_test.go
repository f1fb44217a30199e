package cockroach

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// proxy forwards TCP connections to target until cut, which drops every
// open connection and refuses new ones, as a database restart would.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		p.wg.Add(2)
		go pipe(c, up)
		go pipe(up, c)
	}
}

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

// TestDatabaseOutage cuts the connection to PostgreSQL in the middle of a
// load: while it is down every call fails with ErrUnavailable, afterwards
// the pool recovers by itself, and every acknowledged Complete is stored.
func TestDatabaseOutage(t *testing.T) {
	ctx := testCtx(t)
	direct := migratedURL(t, postgresURL(t))
	du, _ := url.Parse(direct)
	px := newProxy(t, du.Host)
	pu := *du
	pu.Host = px.ln.Addr().String()
	s := openTest(t, withParams(t, pu.String(), ParamConnectRetry, "0", ParamStatementTimeout, "5s"))
	defer s.Close()

	var (
		mu      sync.Mutex
		acked   []string
		failed  atomic.Int64
		badErrs = make(chan error, 100)
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("g%d-%d", g, i)
				id := storage.ID{Tenant: "t", Namespace: "ns", Key: key}
				_, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
				if err == nil {
					_, err = s.Complete(ctx, storage.CompleteParams{ID: id, Token: 1, Result: &storage.Result{Body: []byte(key)}, Retention: time.Hour})
					if err == nil {
						mu.Lock()
						acked = append(acked, key)
						mu.Unlock()
						continue
					}
				}
				failed.Add(1)
				if !errors.Is(err, storage.ErrUnavailable) && ctx.Err() == nil {
					select {
					case badErrs <- err:
					default:
					}
				}
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}

	waitFor("load before the outage", func() bool { return ackedCount() >= 50 })
	px.setCut(true)
	failedBefore := failed.Load()
	probe := storage.ID{Tenant: "t", Namespace: "ns", Key: "probe"}
	if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: probe, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Reserve() during outage error = %v, want ErrUnavailable", err)
	}
	if _, err := s.Lookup(ctx, probe); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Lookup() during outage error = %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Ping() during outage error = %v, want ErrUnavailable", err)
	}
	waitFor("the load to see the outage", func() bool { return failed.Load() >= failedBefore+8 })
	ackedAtRestore := ackedCount()
	px.setCut(false)
	waitFor("the pool to recover", func() bool { return s.Ping(ctx) == nil })
	waitFor("load after the outage", func() bool { return ackedCount() >= ackedAtRestore+50 })
	close(stop)
	wg.Wait()
	close(badErrs)
	for err := range badErrs {
		t.Errorf("during the outage an operation failed with %v, want ErrUnavailable", err)
	}

	check := openTest(t, direct)
	defer check.Close()
	mu.Lock()
	defer mu.Unlock()
	for _, key := range acked {
		rec, err := check.Lookup(ctx, storage.ID{Tenant: "t", Namespace: "ns", Key: key})
		if err != nil {
			t.Fatalf("Lookup(%q) of an acknowledged Complete error = %v", key, err)
		}
		if rec.State != storage.StateCompleted || string(rec.Result.Body) != key {
			t.Fatalf("Lookup(%q) = state %v body %q, want COMPLETED with body %q", key, rec.State, rec.Result.Body, key)
		}
	}
	t.Logf("%d acknowledged Completes survived the outage; %d calls failed with ErrUnavailable", len(acked), failed.Load())
}

// TestOpenUnreachable: a URL nobody answers fails at open with an error
// that names the host and database but never the password.
func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	raw := "postgres://idem:s3cretPassw0rd@" + addr + "/idemdb?sslmode=disable&connect_retry=300ms"
	for _, open := range []struct {
		name string
		fn   func() error
	}{
		{"Open", func() error { _, err := Open(ctx, raw, quiet); return err }},
		{"storage.Open", func() error { _, err := storage.Open(ctx, raw, storage.OpenOptions{Logger: quiet}); return err }},
		{"Migrate", func() error { return Migrate(ctx, raw, quiet) }},
	} {
		t.Run(open.name, func(t *testing.T) {
			err := open.fn()
			if err == nil {
				t.Fatal("error = nil, want an error")
			}
			msg := err.Error()
			if !errors.Is(err, storage.ErrUnavailable) {
				t.Errorf("error = %v, want ErrUnavailable", err)
			}
			if want := addr + "/idemdb"; !strings.Contains(msg, want) {
				t.Errorf("error = %q, want it to name %q", msg, want)
			}
			if strings.Contains(msg, "s3cretPassw0rd") {
				t.Errorf("error = %q leaks the password", msg)
			}
		})
	}
}

func TestOpenBadParams(t *testing.T) {
	ctx := testCtx(t)
	for _, raw := range []string{
		"postgres://u:pw@h/db?statement_timeout=soon",
		"postgres://u:pw@h/db?connect_retry=-1s",
		"postgres://u:pw@h/db?sweep_batch=0",
		"postgres://u:pw@h/db?multi_region=maybe",
		"postgres://u:pw@h:notaport/db",
	} {
		_, err := Open(ctx, raw, quiet)
		if err == nil {
			t.Errorf("Open(%q) error = nil, want an error", raw)
			continue
		}
		if strings.Contains(err.Error(), ":pw@") {
			t.Errorf("Open(%q) error = %q leaks the password", raw, err)
		}
	}
}
