package redis

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idemhq/idem/storage"
)

// dupScan makes every SCAN reply name each of its keys twice, as Redis may
// when its table is resized during the walk ("a given element may be
// returned multiple times").
type dupScan struct{}

func (dupScan) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (dupScan) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		err := next(ctx, cmd)
		if sc, ok := cmd.(*goredis.ScanCmd); ok && err == nil {
			keys, cursor := sc.Val()
			sc.SetVal(append(keys, keys...), cursor)
		}
		return err
	}
}

func (dupScan) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

// TestScanDuplicates checks that List and Stats count a record once when
// SCAN names its key more than once.
func TestScanDuplicates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s := openTest(ctx, t, "")
	for i := range 3 {
		if _, _, err := s.Reserve(ctx, reserveParams(fmt.Sprintf("k%d", i))); err != nil {
			t.Fatalf("Reserve(k%d) error = %v", i, err)
		}
	}
	s.c.AddHook(dupScan{})

	recs, more, err := s.List(ctx, storage.ListParams{Tenant: "t", Namespace: testID("").Namespace, Limit: 10})
	if err != nil || more || len(recs) != 3 {
		t.Errorf("List() = %d records, more %v, %v; want 3, false, nil", len(recs), more, err)
	}
	for _, ns := range []string{"", testID("").Namespace} {
		rows, err := s.Stats(ctx, "t", ns)
		if err != nil {
			t.Fatalf("Stats(%q) error = %v", ns, err)
		}
		want := []storage.StatsRow{{Namespace: testID("").Namespace, State: storage.StateInProgress, Count: 3}}
		if fmt.Sprint(rows) != fmt.Sprint(want) {
			t.Errorf("Stats(%q) = %v, want %v", ns, rows, want)
		}
	}
}

// TestNewRefusesSubMillisecondWait checks New's WaitTimeout bound: WAIT
// takes whole milliseconds and reads 0 as "block until the replicas
// answer", so a timeout under 1ms would wait forever instead of briefly.
func TestNewRefusesSubMillisecondWait(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	_, err := New(ctx, c, Options{KeyPrefix: "idem", WaitReplicas: 1, WaitTimeout: 500 * time.Microsecond})
	if err == nil || !strings.Contains(err.Error(), "wait timeout") {
		t.Fatalf("New(WaitTimeout: 500µs) error = %v, want one naming the wait timeout", err)
	}
}
