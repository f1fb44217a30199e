package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// TestErrorsFromServerStatuses runs the server's own error mapping and the
// client's mapping back: the sentinel survives the round trip, and the
// text names it once.
func TestErrorsFromServerStatuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store := memory.New()
	defer store.Close()
	svc, err := server.New(store)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	tests := []struct {
		name     string
		err      error
		want     error
		wantText string
	}{
		{"lease lost", idem.ErrLeaseLost, ErrLeaseLost, "idem: lease lost"},
		{"lease lost with detail", fmt.Errorf("%w: token 1 superseded by 2", idem.ErrLeaseLost), ErrLeaseLost, "idem: lease lost: token 1 superseded by 2"},
		{"not in progress", idem.ErrNotInProgress, ErrNotInProgress, "idem: record is not in progress"},
		{"not found", fmt.Errorf("%w: ns/k", idem.ErrNotFound), ErrNotFound, "idem: record not found: ns/k"},
		{"store closed", fmt.Errorf("pebble: closed: %w", idem.ErrClosed), ErrClosed, "idem: store closed"},
		{"store unavailable", fmt.Errorf("dial tcp 10.0.0.1:5432: %w", idem.ErrUnavailable), ErrUnavailable, "idem: store unavailable"},
		{"damaged", storage.Damaged(storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}, errors.New("bad version 9")), ErrDamaged,
			`idem: stored record cannot be decoded: key "k" in namespace "ns"; an admin DeleteKey removes it`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := svc.Status(ctx, "/idem.v1.IdempotencyService/Complete", tt.err)
			got := mapError(ctx, st)
			if !errors.Is(got, tt.want) {
				t.Errorf("client error = %v, want errors.Is %v", got, tt.want)
			}
			if got.Error() != tt.wantText {
				t.Errorf("client error text = %q, want %q", got.Error(), tt.wantText)
			}
			if n := strings.Count(got.Error(), tt.want.Error()); n != 1 {
				t.Errorf("client error text %q names %q %d times, want once", got.Error(), tt.want.Error(), n)
			}
			if s, _ := status.FromError(got); s.Code() != status.Code(st) {
				t.Errorf("status code = %v, want the server's %v", s.Code(), status.Code(st))
			}
		})
	}
}

func TestErrorDomainIsShared(t *testing.T) {
	tests := []struct{ name, client, server string }{
		{"domain", ErrorDomain, server.ErrorDomain},
		{"store closed", ReasonStoreClosed, server.ReasonClosed},
		{"lease lost", ReasonLeaseLost, server.ReasonLeaseLost},
		{"not in progress", ReasonNotInProgress, server.ReasonNotInProgress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.client != tt.server {
				t.Errorf("client's = %q, want the server's %q", tt.client, tt.server)
			}
		})
	}
}
