package idemd

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// A misspelt variable (IDEM_STORE_URL for IDEM_STORE) used to leave the
// default store in use without a word; idemd now names it at start.
// idemctl's variables and the tests' are not idemd's to warn about.
func TestUnknownEnvIsWarned(t *testing.T) {
	env := []string{"IDEM_STORE_URL=memory://", "IDEM_ADDR=127.0.0.1:1", "IDEM_TEST_REDIS_URL=x", "IDEM_BENCH_REDIS_URL=x", "IDEM_STRESS=1", "IDEM_LOG_LEVEL=info", "PATH=/bin", "IDEM_SHUTDOWN_TIMOUT=5s"}
	old := environ
	environ = func() []string { return env }
	defer func() { environ = old }()

	cfg, _, _, ok := parseFlags("[serve]", []string{"--store", "memory://"}, noEnv, &lineWriter{})
	if !ok {
		t.Fatal("parseFlags failed")
	}
	if want := []string{"IDEM_SHUTDOWN_TIMOUT", "IDEM_STORE_URL"}; !slices.Equal(cfg.unknownEnv, want) {
		t.Fatalf("unknown env = %q, want %q", cfg.unknownEnv, want)
	}

	// Through migrate, which logs before it works (no migrator: nothing to do).
	var stderr lineWriter
	if code := Main(context.Background(), []string{"migrate", "--store", "memory://"}, noEnv, &stderr); code != ExitOK {
		t.Fatalf("Main(migrate) = %d: %s", code, stderr)
	}
	for _, name := range []string{"IDEM_STORE_URL", "IDEM_SHUTDOWN_TIMOUT"} {
		if !strings.Contains(string(stderr), `"name":"`+name+`"`) {
			t.Errorf("stderr does not warn of %s: %s", name, stderr)
		}
	}
	if strings.Contains(string(stderr), "IDEM_ADDR") {
		t.Errorf("stderr warns of idemctl's IDEM_ADDR: %s", stderr)
	}
}
