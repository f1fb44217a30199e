package client_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/idemhq/idem/client"
)

// BenchmarkServerInterceptor measures what the server interceptor adds per
// unary call over bufconn, against an in-process idem (Local) and an idemd
// reached over bufconn (*Client, with and without its completed-record
// cache), for new keys and for replays of one key. "baseline" is the same
// call with no idem interceptor.
//
//	go test ./client -run '^$' -bench ServerInterceptor -benchtime 2000x
func BenchmarkServerInterceptor(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout*3)
	defer cancel()
	b.Run("baseline", func(b *testing.B) {
		a := startApp(b, appConfig{opts: []client.InterceptorOption{client.WithSelector(func(context.Context, string) bool { return false })}})
		req := unaryReq("charge 10")
		for b.Loop() {
			if _, err := a.tc.UnaryCall(client.WithKey(ctx, "k"), req); err != nil {
				b.Fatal(err)
			}
		}
	})
	idems := []struct {
		name string
		cfg  idemConfig
	}{
		{"local", idemConfig{}},
		{"remote", idemConfig{remote: true}},
		{"remote-cache", idemConfig{remote: true, clientOpts: []client.Option{client.WithCache(1 << 16)}}},
	}
	for _, ic := range idems {
		b.Run("new-keys/"+ic.name, func(b *testing.B) {
			a := startApp(b, appConfig{idem: ic.cfg})
			req := unaryReq("charge 10")
			i := 0
			for b.Loop() {
				i++
				if _, err := a.tc.UnaryCall(client.WithKey(ctx, fmt.Sprint("k", i)), req); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("replay/"+ic.name, func(b *testing.B) {
			a := startApp(b, appConfig{idem: ic.cfg})
			req := unaryReq("charge 10")
			if _, err := a.tc.UnaryCall(client.WithKey(ctx, "k"), req); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := a.tc.UnaryCall(client.WithKey(ctx, "k"), req); err != nil {
					b.Fatal(err)
				}
			}
			if n := a.ts.calls.Load(); n != 1 {
				b.Fatalf("handler ran %d times, want 1", n)
			}
		})
	}
}
