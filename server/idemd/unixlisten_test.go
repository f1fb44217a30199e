package idemd

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// --listen unix:PATH passed the plaintext check as local, then failed as
// a TCP address ("lookup tcp//…: unknown port"); idemctl dials unix: too.
func TestListenOnUnixSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	// Short: a socket path is limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "idemd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")

	// A socket left behind by an idemd that was killed is taken over.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	for _, listen := range []string{"unix:" + sock, "unix://" + sock} {
		t.Run(listen, func(t *testing.T) {
			cfg := memoryConfig()
			cfg.Listen = listen
			g := newGate()
			close(g.release)
			_, stop, done := serveInBackground(t, cfg, g)
			c := dial(t, "unix:"+sock)
			if _, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"}); err != nil {
				t.Fatalf("Reserve() over the socket = %v", err)
			}
			stop()
			if err := <-done; err != nil {
				t.Fatalf("Serve() = %v", err)
			}
			if _, err := os.Stat(sock); !os.IsNotExist(err) {
				t.Fatalf("socket after shutdown: %v, want it removed", err)
			}
		})
	}

	// A file that is no socket is never removed to make room.
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := memoryConfig()
	cfgFile.Listen = "unix:" + file
	if err := Serve(ctx, cfgFile, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("Serve() on a regular file = nil, want an error")
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Fatalf("regular file at the socket path after Serve(): %q, %v; want it kept", b, err)
	}

	// A socket another idemd serves on is not taken over.
	cfg := memoryConfig()
	cfg.Listen = "unix:" + sock
	g := newGate()
	close(g.release)
	_, stop, done := serveInBackground(t, cfg, g)
	defer func() { stop(); <-done }()
	cfg2 := memoryConfig()
	cfg2.Listen = "unix:" + sock
	if err := Serve(ctx, cfg2, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("second Serve() on a live socket = nil, want an error")
	}
}
