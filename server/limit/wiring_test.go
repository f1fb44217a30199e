package limit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/server/auth"
	"github.com/idemhq/idem/server/limit"
	"github.com/idemhq/idem/server/observe"
	"github.com/idemhq/idem/storage/memory"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", s)
		}
		out = append(out, m)
	}
	return out
}

// TestWiredChain is how idemd wires these packages around the real
// service, in this order: tracing stats handler; logging; RPC metrics;
// authentication; audit; limits; idem's service metrics; the service with
// auth's TenantFunc over an instrumented store.
func TestWiredChain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var logs lockedBuffer
	log := observe.NewLogger(&logs, slog.LevelInfo)

	tokClient, lineClient, _ := auth.MintToken("acme", auth.RoleClient, time.Time{}, "acme-api")
	tokAdmin, lineAdmin, _ := auth.MintToken("acme", auth.RoleAdmin, time.Time{}, "acme-ops")
	ac := auth.DefaultConfig()
	ac.TokensFile = t.TempDir() + "/tokens"
	writeFile(t, ac.TokensFile, lineClient+"\n"+lineAdmin+"\n")
	if err := auth.CheckListen("127.0.0.1:0", ac.TLS(), ac.Insecure); err != nil {
		t.Fatal(err)
	}

	reg := observe.NewRegistry()
	authn, err := auth.New(ac, auth.WithLogger(log), auth.WithRejectHook(reg.Metrics.Rejected))
	if err != nil {
		t.Fatal(err)
	}
	lim := limit.New(limit.Config{MaxInflight: 100, TenantRate: 1000}, limit.WithMetrics(reg.Metrics))
	mem := memory.New()
	defer mem.Close()
	store := observe.InstrumentStore("memory", mem, reg.Metrics)
	svc, err := server.New(store, server.WithLogger(log), server.WithTenantFunc(authn.TenantFunc))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	gs := server.NewGRPCServer(svc, append(authn.ServerOptions(),
		observe.StatsHandler(),
		grpc.ChainUnaryInterceptor(
			observe.UnaryServerInterceptor(log),
			reg.UnaryServerInterceptor(),
			authn.UnaryServerInterceptor(),
			observe.AuditUnaryServerInterceptor(log),
			lim.UnaryServerInterceptor(),
			reg.Metrics.UnaryServerInterceptor(),
		),
		grpc.ChainStreamInterceptor(
			observe.StreamServerInterceptor(log),
			reg.StreamServerInterceptor(),
			authn.StreamServerInterceptor(),
			lim.StreamServerInterceptor(),
		))...)
	reg.InitializeMetrics(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	data, admin := idemv1.NewIdempotencyServiceClient(conn), idemv1.NewAdminServiceClient(conn)
	asClient := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tokClient)
	asAdmin := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tokAdmin)

	const key = "order-7-secret"
	if _, err := data.Reserve(asClient, &idemv1.ReserveRequest{Namespace: "/shop.v1.Orders/Create", Key: key, Fingerprint: []byte("f")}); err != nil {
		t.Fatalf("Reserve() error = %v", err)
	}
	if _, err := admin.Stats(asClient, &idemv1.StatsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Stats() as client error = %v, want PermissionDenied", err)
	}
	if _, err := admin.DeleteKey(asAdmin, &idemv1.DeleteKeyRequest{Namespace: "/shop.v1.Orders/Create", Key: key}); err != nil {
		t.Fatalf("DeleteKey() as admin error = %v", err)
	}
	if _, err := data.Lookup(asClient, &idemv1.LookupRequest{Tenant: "victim", Namespace: "n", Key: "k"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Lookup() of another tenant error = %v, want PermissionDenied", err)
	}
	if _, err := data.Lookup(ctx, &idemv1.LookupRequest{Tenant: "victim", Namespace: "n", Key: "k"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Lookup() without token error = %v, want Unauthenticated", err)
	}

	var calls, audits int
	for _, l := range logs.lines(t) {
		if raw, _ := json.Marshal(l); strings.Contains(string(raw), key) {
			t.Errorf("log line contains the raw key: %s", raw)
		}
		switch l["msg"] {
		case "finished call":
			calls++
			if l["grpc.code"] == "Unauthenticated" && l["tenant"] != "" {
				t.Errorf("refused call logged with tenant %v, want none", l["tenant"])
			}
			if l["grpc.method"] == "Reserve" && (l["tenant"] != "acme" || l["key_hash"] != observe.HashKey(key) || l["subject"] != "token:acme-api") {
				t.Errorf("Reserve log line = %v, want tenant acme, the key's hash and the token's subject", l)
			}
		case "audit":
			audits++
			if l["action"] != "DeleteKey" || l["who"] != "token:acme-ops" || l["who_tenant"] != "acme" || l["code"] != "OK" || l["key_hash"] != observe.HashKey(key) {
				t.Errorf("audit line = %v, want DeleteKey by token:acme-ops", l)
			}
		}
	}
	if calls != 5 || audits != 1 {
		t.Errorf("logged %d calls and %d audit lines, want 5 and 1", calls, audits)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			k := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.GetCounter() != nil:
				got[k] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				got[k] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	for k, want := range map[string]float64{
		"idem_store_op_duration_seconds{op=reserve,store=memory}":                                                             1,
		"idem_store_op_duration_seconds{op=delete,store=memory}":                                                              1,
		"idem_rejected_total{reason=permission_denied}":                                                                       2,
		"idem_rejected_total{reason=unauthenticated}":                                                                         1,
		"grpc_server_handled_total{grpc_code=OK,grpc_method=Reserve,grpc_service=idem.v1.IdempotencyService,grpc_type=unary}": 1,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
