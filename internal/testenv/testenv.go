// Package testenv finds the real servers that idem's server-backed tests
// use. A test asks for a URL; without the server it is skipped with a
// message saying how to run it, except under CI (env CI set), where a
// missing or unreachable server fails the test: CI must never pass by
// skipping what it was meant to check.
package testenv

import (
	"net"
	"net/url"
	"os"
	"testing"
	"time"
)

// PostgresURL returns IDEM_TEST_POSTGRES_URL after checking the server answers.
func PostgresURL(t testing.TB) string {
	return need(t, "IDEM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
}

// RedisURL returns IDEM_TEST_REDIS_URL after checking the server answers.
func RedisURL(t testing.TB) string {
	return need(t, "IDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
}

// NATSURL returns IDEM_TEST_NATS_URL after checking the server answers.
func NATSURL(t testing.TB) string {
	return need(t, "IDEM_TEST_NATS_URL", "nats://127.0.0.1:4222")
}

// InCI reports whether the tests run under CI.
func InCI() bool { return os.Getenv("CI") != "" }

func need(t testing.TB, env, example string) string {
	t.Helper()
	raw := os.Getenv(env)
	if raw == "" {
		unavailable(t, "%s is not set; run with %s=%s (make test sets it)", env, env, example)
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		t.Fatalf("%s=%q is not a URL with a host", env, raw)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), defaultPort(u.Scheme))
	}
	c, err := net.DialTimeout("tcp", host, 3*time.Second)
	if err != nil {
		unavailable(t, "%s: cannot reach %s: %v", env, host, err)
		return ""
	}
	c.Close()
	return raw
}

func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI is set, so this server-backed test must run: "+format, args...)
	}
	t.Skipf("skipping: "+format, args...)
}

func defaultPort(scheme string) string {
	switch scheme {
	case "redis", "rediss":
		return "6379"
	case "nats":
		return "4222"
	}
	return "5432"
}
