package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

func completedRecord(key string, body int) *idemv1.Record {
	return &idemv1.Record{
		Key: key, State: idemv1.RecordState_RECORD_STATE_COMPLETED, Fingerprint: []byte("fp"),
		Result:    &idemv1.Result{Body: []byte(strings.Repeat("x", body))},
		ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
	}
}

// The cache is bounded in bytes as well as in records: results of up to
// 1 MiB each would make WithCache(10000) hold 10 GB.
func TestCacheBoundedInBytes(t *testing.T) {
	const body = 100 << 10
	c, err := New("passthrough:///idem", WithInsecure(), WithCache(1000), WithCacheBytes(5*body))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		c.remember(cacheKey{key: fmt.Sprint(i)}, completedRecord(fmt.Sprint(i), body))
	}
	if got := c.cacheBytes.Load(); got > 5*body {
		t.Errorf("cache holds %d bytes, want at most %d", got, 5*body)
	}
	hits := 0
	for i := range 20 {
		if _, ok := c.cached(cacheKey{key: fmt.Sprint(i)}, []byte("fp")); ok {
			hits++
		}
	}
	if hits == 0 || hits >= 5 {
		t.Errorf("%d of 20 records of %d bytes cached under a %d-byte bound, want 1 to 4", hits, body, 5*body)
	}
	if _, ok := c.cached(cacheKey{key: "19"}, []byte("fp")); !ok {
		t.Error("the newest record was evicted, want the oldest ones gone")
	}
	// One record larger than the whole bound is not kept, and does not
	// push out the others.
	c.remember(cacheKey{key: "huge"}, completedRecord("huge", 6*body))
	if _, ok := c.cached(cacheKey{key: "huge"}, []byte("fp")); ok {
		t.Error("a record larger than the bound was cached")
	}
	if _, ok := c.cached(cacheKey{key: "19"}, []byte("fp")); !ok {
		t.Error("a record larger than the bound evicted the others")
	}
	// Replacing a record keeps the count of bytes right.
	before := c.cacheBytes.Load()
	for range 3 {
		c.remember(cacheKey{key: "19"}, completedRecord("19", body))
	}
	if got := c.cacheBytes.Load(); got != before {
		t.Errorf("cache bytes = %d after replacing one record 3 times, want %d", got, before)
	}
	c.cache.Purge()
	if got := c.cacheBytes.Load(); got != 0 {
		t.Errorf("cache bytes = %d after Purge, want 0", got)
	}
}

// Callers remembering one key at once do not count it twice.
func TestCacheBytesUnderConcurrentRemember(t *testing.T) {
	c, err := New("passthrough:///idem", WithInsecure(), WithCache(1000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 50 {
				c.remember(cacheKey{key: "k"}, completedRecord("k", 100))
			}
		})
	}
	wg.Wait()
	c.cache.Purge()
	if got := c.cacheBytes.Load(); got != 0 {
		t.Errorf("cache bytes = %d after Purge, want 0", got)
	}
}

// A cached answer is not given to a call whose context has ended: the
// client answers such calls ctx.Err(), as gRPC does.
func TestCacheAnswersNoEndedCall(t *testing.T) {
	c, err := New("passthrough:///idem", WithInsecure(), WithCache(10), WithoutBreaker(), WithRetry(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.remember(cacheKey{namespace: "ns", key: "k"}, completedRecord("k", 10))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	resp, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("fp")})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Reserve() with a cancelled context = %v, %v; want context.Canceled", resp, err)
	}
}
