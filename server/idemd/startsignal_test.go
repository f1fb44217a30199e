package idemd

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// stallOpened is told when a stall:// store starts opening; the open
// then waits for its context, as a database that does not answer yet.
var stallOpened = make(chan struct{}, 1)

func init() {
	storage.Register("stall", func(ctx context.Context, _ *url.URL, _ storage.OpenOptions) (storage.Store, error) {
		stallOpened <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

// A SIGTERM while the store is still connecting is an operator's stop,
// not a store that cannot be opened: it exited 2 with "context canceled".
func TestSignalWhileOpeningStoreIsAStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- Main(ctx, []string{"--listen", "127.0.0.1:0", "--store", "stall://"}, func(string) (string, bool) { return "", false }, &stderr)
	}()
	select {
	case <-stallOpened:
	case <-time.After(defaultTestTimeout):
		t.Fatal("the store was never opened")
	}
	cancel()
	var got int
	select {
	case got = <-code:
	case <-time.After(defaultTestTimeout):
		t.Fatal("Main() did not return after the signal")
	}
	line := stderr.String()
	if got != ExitOK || !strings.HasPrefix(line, "idemd: stopped before serving") || strings.Count(line, "\n") != 1 {
		t.Fatalf("Main() = %d, stderr %q; want %d and one line saying idemd stopped before serving", got, line, ExitOK)
	}
}
