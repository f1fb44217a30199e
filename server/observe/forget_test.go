package observe

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/idemhq/idem/storage"
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

// Once the last store of a name is closed (a policy reload dropped it),
// none of its series stay exported; the other stores' do.
func TestLastClosedStoreForgetsItsSeries(t *testing.T) {
	ctx := t.Context()
	m := NewMetrics()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	kept := InstrumentStore("postgres", memory.New(), m)
	defer kept.Close()
	gone := InstrumentStore("postgres://b:5432/idem", &countingStore{Store: memory.New(), swept: 2, answered: 1, filterBytes: 1}, m)
	for _, s := range []storage.Store{kept, gone} {
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	m.storeErrors.WithLabelValues("postgres://b:5432/idem", "ping").Inc()
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "store" && l.GetValue() != "postgres" {
					names = append(names, mf.GetName()+"{store="+l.GetValue()+"}")
				}
			}
		}
	}
	if len(names) > 0 {
		t.Errorf("series of the closed store still exported: %v", names)
	}
	if n := histCount(t, m, "postgres", "ping"); n != 1 {
		t.Errorf("open store's ping observations = %d, want 1", n)
	}
}

func TestStoreLabels(t *testing.T) {
	l := NewStoreLabels()
	tests := []struct{ kind, url, want string }{
		{"postgres", "postgres://idem:s3cret@db-a:5432/idem?sslmode=require&password=x", "postgres://db-a:5432/idem"},
		{"postgres", "postgresql://db-b:5432/idem", "postgres://db-b:5432/idem"},
		{"postgres", "postgres://other:pw@db-a:5432/idem?options=-csearch_path%3Db", "postgres://db-a:5432/idem#2"},
		{"postgres", "postgres://idem:s3cret@db-a:5432/idem?sslmode=require&password=x", "postgres://db-a:5432/idem"}, // seen before
		{"redis", "rediss://:tok@cache:6379/0", "redis://cache:6379/0"},
		{"pebble", "pebble:///var/lib/idem/%ff", "pebble:///var/lib/idem/%ff"},
		{"memory", "memory://", "memory://"},
	}
	for _, tt := range tests {
		got := l.Label(tt.kind, tt.url)
		if got != tt.want {
			t.Errorf("Label(%q, %q) = %q, want %q", tt.kind, tt.url, got, tt.want)
		}
		if strings.Contains(got, "s3cret") || strings.Contains(got, "tok") || strings.Contains(got, "idem:") {
			t.Errorf("Label(%q) = %q carries credentials", tt.url, got)
		}
	}
}
