package observe

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/idemhq/idem/storage/memory"
)

// countingStore is a store with a sweeper count and a key filter, as
// pebble has.
type countingStore struct {
	*memory.Store
	swept, answered uint64
	filterBytes     int64
}

func (s *countingStore) Swept() uint64                { return s.swept }
func (s *countingStore) FilterStats() (int64, uint64) { return s.filterBytes, s.answered }

// A store a policy reload closes lets the metrics go of it: its sweeps
// and filter answers stay counted, its filter memory leaves the gauge, and
// its counters are no longer read (the store stays unreachable).
func TestClosedStoreLeavesTheCollectors(t *testing.T) {
	m := NewMetrics()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	old := &countingStore{Store: memory.New(), swept: 7, answered: 3, filterBytes: 1 << 20}
	cur := &countingStore{Store: memory.New(), swept: 1, answered: 1, filterBytes: 1 << 10}
	wOld := InstrumentStore("pebble", old, m)
	wCur := InstrumentStore("pebble", cur, m)
	defer wCur.Close()
	if err := wOld.Close(); err != nil {
		t.Fatal(err)
	}
	m.swept.mu.Lock()
	n := len(m.swept.sources["pebble"])
	m.swept.mu.Unlock()
	m.filter.mu.Lock()
	nf := len(m.filter.sources["pebble"])
	m.filter.mu.Unlock()
	if n != 1 || nf != 1 {
		t.Errorf("collectors hold %d and %d sources after a close, want 1 and 1 (the open store's)", n, nf)
	}
	want := `
# HELP idem_records_swept_total Expired records physically deleted by a store's sweeper.
# TYPE idem_records_swept_total counter
idem_records_swept_total{store="pebble"} 8
# HELP idem_store_filter_answered_total Reads of keys a store's key filter knew were never stored, answered without reading the store.
# TYPE idem_store_filter_answered_total counter
idem_store_filter_answered_total{store="pebble"} 4
# HELP idem_store_filter_bytes Memory of a store's in-memory key filter (pebble's presence filter, outside the Go heap).
# TYPE idem_store_filter_bytes gauge
idem_store_filter_bytes{store="pebble"} 1024
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), NameRecordsSwept, NameFilterAnswered, NameFilterBytes); err != nil {
		t.Error(err)
	}
}
