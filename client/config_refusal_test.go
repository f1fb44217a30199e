package client_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
)

// TestConfigRefusalFailsClosed: idem refusing a Reserve for the
// interceptor's own configuration (a retention above idem's maximum) is a
// refusal like a credential idem does not accept: logged for the service's
// operators and answered UNAVAILABLE, not INVALID_ARGUMENT, which tells
// the caller its request is wrong. A key the caller sent that idem refuses
// stays INVALID_ARGUMENT.
func TestConfigRefusalFailsClosed(t *testing.T) {
	ctx := testCtx(t)
	var logs logBuffer
	ts := &testService{}
	a := startApp(t, appConfig{ts: ts, opts: []client.InterceptorOption{
		client.WithRetention(40 * 24 * time.Hour),
		client.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))),
	}})
	_, err, _ := a.call(ctx, "k", unaryReq("x"))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("call refused for the interceptor's retention: %v, want UNAVAILABLE", err)
	}
	if got := logs.String(); !strings.Contains(got, `"level":"ERROR"`) || !strings.Contains(got, "retention") {
		t.Errorf("log = %s\nwant an ERROR line naming the retention", got)
	}
	b := startApp(t, appConfig{ts: ts})
	if _, err, _ := b.call(ctx, strings.Repeat("k", 300), unaryReq("x")); status.Code(err) != codes.InvalidArgument {
		t.Errorf("call with a 300-byte key: %v, want INVALID_ARGUMENT", err)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("handler runs = %d, want 0", n)
	}
}
