package redis

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/idemhq/idem/internal/testenv"
	"github.com/idemhq/idem/storage"
)

// cutProxy forwards TCP connections to Redis and drops a connection right
// after it forwarded a whole reply containing marker, as a network that
// fails between two replies of one pipeline would.
type cutProxy struct {
	ln     net.Listener
	target string
	marker []byte
	wg     sync.WaitGroup
	mu     sync.Mutex
	cuts   int
}

func newCutProxy(t *testing.T, target string, marker []byte) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, marker: marker}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(up, c)
			up.Close()
		}()
		go func() {
			defer p.wg.Done()
			defer c.Close()
			defer up.Close()
			rd := bufio.NewReader(up)
			for {
				var reply bytes.Buffer
				if err := copyReply(&reply, rd); err != nil {
					return
				}
				if _, err := c.Write(reply.Bytes()); err != nil {
					return
				}
				if bytes.Contains(reply.Bytes(), p.marker) {
					p.mu.Lock()
					p.cuts++
					p.mu.Unlock()
					return
				}
			}
		}()
	}
}

// copyReply copies one RESP2 or RESP3 reply from rd to w.
func copyReply(w *bytes.Buffer, rd *bufio.Reader) error {
	line, err := rd.ReadBytes('\n')
	if err != nil {
		return err
	}
	w.Write(line)
	if len(line) < 3 {
		return errors.New("short RESP line")
	}
	n, _ := strconv.Atoi(string(line[1 : len(line)-2]))
	switch line[0] {
	case '$', '!', '=': // bulk: n bytes and CRLF; -1 is null
		if n >= 0 {
			if _, err := io.CopyN(w, rd, int64(n)+2); err != nil {
				return err
			}
		}
	case '*', '~', '>', '%', '|': // aggregates: n elements (pairs for maps)
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		for range max(n, 0) {
			if err := copyReply(w, rd); err != nil {
				return err
			}
		}
		if line[0] == '|' { // an attribute precedes the reply it annotates
			return copyReply(w, rd)
		}
	}
	return nil
}

// TestPipelineCutKeepsAnsweredCalls: a pipeline's scripts each apply their
// writes before Redis answers them, so when the connection fails after some
// replies arrived, those calls are done and must be answered as they were
// applied; only the calls whose replies were lost fail. Failing them all
// would drop reservations that were made: their callers would retry and
// find the keys IN_PROGRESS, held by nobody, until the leases end.
func TestPipelineCutKeepsAnsweredCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	marker := []byte("fp-answered-before-the-cut")
	direct, s, px := openCut(ctx, t, marker)

	// Two tenants: two script calls in one pipeline, the first answered.
	a := storage.ReserveParams{ID: storage.ID{Tenant: "ta", Namespace: "ns", Key: "a"}, Fingerprint: marker, LeaseTTL: time.Minute, Retention: time.Hour}
	b := storage.ReserveParams{ID: storage.ID{Tenant: "tb", Namespace: "ns", Key: "b"}, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}
	rs, err := s.BatchReserve(ctx, []storage.ReserveParams{a, b})
	px.mu.Lock()
	cuts := px.cuts
	px.mu.Unlock()
	if cuts != 1 {
		t.Fatalf("the proxy cut %d connections, want 1: nothing was checked", cuts)
	}
	if err != nil {
		t.Fatalf("BatchReserve() error = %v; want item a answered, item b failed", err)
	}
	if rs[0].Err != nil || rs[0].Outcome != storage.OutcomeReserved || rs[0].Record.Token != 1 {
		t.Errorf("BatchReserve() item a = %v %+v, %v; want RESERVED token 1 (its reply arrived)", rs[0].Outcome, rs[0].Record, rs[0].Err)
	}
	if !errors.Is(rs[1].Err, storage.ErrUnavailable) {
		t.Errorf("BatchReserve() item b error = %v, want ErrUnavailable (its reply was lost)", rs[1].Err)
	}
	if rec, err := direct.Lookup(ctx, a.ID); err != nil || rec.State != storage.StateInProgress || rec.Token != 1 {
		t.Errorf("Lookup(a) = %+v, %v; want the IN_PROGRESS record the batch answered", rec, err)
	}
}

// openCut opens a store straight to Redis and one (uncoalesced) through a
// cut proxy that drops the connection once it has relayed the reply
// holding marker, both with the same key prefix.
func openCut(ctx context.Context, t *testing.T, marker []byte) (direct, cut *Store, px *cutProxy) {
	t.Helper()
	direct = openTest(ctx, t, "")
	u, err := url.Parse(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	px = newCutProxy(t, u.Host, marker)
	pu := *u
	pu.Host = px.ln.Addr().String()
	q := pu.Query()
	q.Set("key_prefix", direct.opts.KeyPrefix)
	q.Set("coalesce", "0")
	pu.RawQuery = q.Encode()
	st, err := storage.Open(ctx, pu.String(), storage.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return direct, st.(*Store), px
}
