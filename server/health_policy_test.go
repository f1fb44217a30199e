package server

import (
	"errors"
	"fmt"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	idem "github.com/idemhq/idem"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// twoStores routes "notify.*"-style namespaces to a second store, as a
// policy file sending low-risk APIs to Redis does.
type twoStores struct {
	main, other storage.Store
	pol         Policy
}

func (r *twoStores) Resolve(_, ns string) (storage.Store, Policy) {
	if len(ns) >= 7 && ns[:7] == "notify." {
		return r.other, r.pol
	}
	return r.main, r.pol
}

func (r *twoStores) Stores() []storage.Store { return []storage.Store{r.main, r.other} }

// TestHealthOneOfSeveralStoresDown: with a policy routing namespaces to
// several stores, one store that stops answering fails only its own
// namespaces. The replica stays SERVING: readiness would otherwise take
// every replica out of the load balancer and the namespaces of the stores
// that still answer (the money path) down with it. NOT_SERVING comes when
// every store fails.
func TestHealthOneOfSeveralStoresDown(t *testing.T) {
	ctx := testContext(t)
	other := &faultStore{Store: memory.New()}
	defer other.Store.Close()
	r := &twoStores{other: other, pol: DefaultLimits().DefaultPolicy()}
	e := newEnv(t, WithPolicyResolver(r))
	r.main = e.store
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		res, err := e.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q) error = %v", service, err)
		}
		return res.GetStatus()
	}
	down := fmt.Errorf("%w: redis gone", idem.ErrUnavailable)
	steps := []struct {
		name            string
		mainErr, notErr error
		want            healthpb.HealthCheckResponse_ServingStatus
	}{
		{"both answer", nil, nil, healthpb.HealthCheckResponse_SERVING},
		{"second store down", nil, down, healthpb.HealthCheckResponse_SERVING},
		{"first store down", down, nil, healthpb.HealthCheckResponse_SERVING},
		{"every store down", down, errors.New("down"), healthpb.HealthCheckResponse_NOT_SERVING},
		{"recovered", nil, nil, healthpb.HealthCheckResponse_SERVING},
	}
	for _, s := range steps {
		e.store.setPingErr(s.mainErr)
		other.setPingErr(s.notErr)
		e.svc.checkHealth()
		for _, name := range []string{"", "idem.v1.IdempotencyService", "idem.v1.AdminService"} {
			if got := check(name); got != s.want {
				t.Errorf("%s: Check(%q) = %v, want %v", s.name, name, got, s.want)
			}
		}
	}
}
