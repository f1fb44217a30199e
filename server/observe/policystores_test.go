package observe_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/idemhq/idem/server/idemd"
	_ "github.com/idemhq/idem/server/policy" // --policy
)

// idemdLog hands on the messages idemd logs that the test waits for.
type idemdLog struct {
	metricsAddr chan string
	storeClosed chan struct{}
}

func (l *idemdLog) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		switch line["msg"] {
		// Never blocks: idemd's log writes must not wait on the test.
		case "idemd serving":
			addr, _ := line["metrics_addr"].(string)
			select {
			case l.metricsAddr <- addr:
			default:
			}
		case "policy store closed":
			select {
			case l.storeClosed <- struct{}{}:
			default:
			}
		}
	}
}

var storeLabel = regexp.MustCompile(`idem_store_op_duration_seconds_count\{op="ping",store="([^"]*)"\}`)

func pingedStores(t *testing.T, ctx context.Context, addr string) []string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var stores []string
	for _, m := range storeLabel.FindAllStringSubmatch(string(body), -1) {
		if m[1] != "memory" { // --store's, whose pings the health checker makes when it will
			stores = append(stores, m[1])
		}
	}
	slices.Sort(stores)
	return stores
}

// Each store of a policy file has series of its own (two stores of one
// kind sharing one, a failed one is half its pings and never pages), the
// server's --store keeps its kind as label, and a store a reload drops
// leaves no series behind.
func TestPolicyStoresHaveTheirOwnSeries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	a, b := "pebble://"+filepath.Join(dir, "a"), "pebble://"+filepath.Join(dir, "b")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write("namespaces:\n  a.*:\n    store: " + a + "\n  b.*:\n    store: " + b + "\n")

	pr, pw := io.Pipe()
	log := &idemdLog{metricsAddr: make(chan string, 1), storeClosed: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); log.read(pr) }()
	sctx, stop := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		done <- idemd.Main(sctx, []string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
			"--store", "memory://", "--policy", path}, func(string) (string, bool) { return "", false }, pw)
	}()
	defer func() {
		stop()
		if code := <-done; code != idemd.ExitOK {
			t.Errorf("idemd exit code = %d", code)
		}
		pw.Close()
		wg.Wait()
	}()
	var addr string
	select {
	case addr = <-log.metricsAddr:
	case code := <-done:
		done <- code
		t.Fatalf("idemd exited with %d before serving", code)
	}

	want := []string{"pebble://" + filepath.Join(dir, "a"), "pebble://" + filepath.Join(dir, "b")}
	if got := pingedStores(t, ctx, addr); !slices.Equal(got, want) {
		t.Fatalf("store labels of the policy's first pings = %q, want %q", got, want)
	}

	write("namespaces:\n  a.*:\n    store: " + a + "\n")
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-log.storeClosed:
	case <-ctx.Done():
		t.Fatal("no store closed after the reload")
	}
	if got := pingedStores(t, ctx, addr); !slices.Equal(got, want[:1]) {
		t.Errorf("store labels after a reload dropped %s = %q, want %q", b, got, want[:1])
	}
}
