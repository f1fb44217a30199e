package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// A second SIGTERM during the drain cuts in-flight calls off at once
// (an operator's second ^C), and idemd still closes the store cleanly.
func TestSecondSIGTERMCutsDrainShort(t *testing.T) {
	ctx := testContext(t)
	store := "pebble://" + filepath.Join(t.TempDir(), "data")
	d := startIdemd(ctx, t, "--store", store, "--shutdown-timeout", "30s")
	conn, err := grpc.NewClient(d.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A stream the client keeps open: a call that does not end by itself.
	st, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(d.stderr.String(), `"msg":"idemd shutting down"`) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("idemd did not start shutting down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if code := d.stop(ctx, t); code != 0 {
		t.Errorf("exit code = %d, want 0; stderr:\n%s", code, d.stderr)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("idemd exited %v after SIGTERM, SIGTERM; want well before its 30s drain", el.Round(time.Millisecond))
	}
	if !strings.Contains(d.stderr.String(), `"msg":"idemd stopped"`) {
		t.Errorf("idemd did not close the store cleanly:\n%s", d.stderr)
	}
}
