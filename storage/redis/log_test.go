package redis

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
)

// go-redis's notices reach idemd's JSON log as debug lines, not plain text
// (idem reports store trouble itself).
func TestRedisNoticesAreJSON(t *testing.T) {
	var buf bytes.Buffer
	redisLog{slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}.Printf(context.Background(), "redis: %s: %d", "pool", 3)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line %q is not JSON: %v", buf.String(), err)
	}
	if line["level"] != "DEBUG" || line["msg"] != "redis: pool: 3" || line["component"] != "go-redis" {
		t.Errorf("log line = %v, want DEBUG \"redis: pool: 3\" from go-redis", line)
	}
}
