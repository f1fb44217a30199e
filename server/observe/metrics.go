package observe

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idemhq/idem/storage"
)

// The names of idem's own metrics. Others (server, backends, deploy/)
// use exactly these.
const (
	NameReserveOutcomes = "idem_reserve_outcomes_total"
	NameTakeovers       = "idem_takeovers_total"
	NameLeaseLost       = "idem_lease_lost_total"
	NameWaits           = "idem_waits_total"
	NameWaitDuration    = "idem_wait_duration_seconds"
	NameStoreOpDuration = "idem_store_op_duration_seconds"
	NameStoreErrors     = "idem_store_errors_total"
	NameRecordsSwept    = "idem_records_swept_total"
	NameFilterBytes     = "idem_store_filter_bytes"
	NameFilterAnswered  = "idem_store_filter_answered_total"
	NameInflightCalls   = "idem_inflight_calls"
	NameRejected        = "idem_rejected_total"
)

// MetricNames are the metric families idem registers itself.
var MetricNames = []string{
	NameReserveOutcomes, NameTakeovers, NameLeaseLost, NameWaits, NameWaitDuration,
	NameStoreOpDuration, NameStoreErrors, NameRecordsSwept, NameFilterBytes, NameFilterAnswered,
	NameInflightCalls, NameRejected,
}

// MetricLabels are the label names of every family in MetricNames and
// GRPCMetricNames, so dashboards and alerts can be checked against them.
var MetricLabels = map[string][]string{
	NameReserveOutcomes:              {"namespace", "outcome"},
	NameTakeovers:                    {"namespace"},
	NameLeaseLost:                    {"namespace", "rpc"},
	NameWaits:                        {"namespace", "result"},
	NameWaitDuration:                 {"namespace"},
	NameStoreOpDuration:              {"store", "op"},
	NameStoreErrors:                  {"store", "op"},
	NameRecordsSwept:                 {"store"},
	NameFilterBytes:                  {"store"},
	NameFilterAnswered:               {"store"},
	NameInflightCalls:                {},
	NameRejected:                     {"reason"},
	"grpc_server_started_total":      {"grpc_type", "grpc_service", "grpc_method"},
	"grpc_server_handled_total":      {"grpc_type", "grpc_service", "grpc_method", "grpc_code"},
	"grpc_server_msg_received_total": {"grpc_type", "grpc_service", "grpc_method"},
	"grpc_server_msg_sent_total":     {"grpc_type", "grpc_service", "grpc_method"},
	"grpc_server_handling_seconds":   {"grpc_type", "grpc_service", "grpc_method"},
}

// GRPCMetricNames are the families go-grpc-middleware's Prometheus
// provider registers for the server, with the handling-time histogram on.
var GRPCMetricNames = []string{
	"grpc_server_started_total",
	"grpc_server_handled_total",
	"grpc_server_msg_received_total",
	"grpc_server_msg_sent_total",
	"grpc_server_handling_seconds",
}

// Label values of idem_waits_total{result}.
const (
	WaitCompleted  = "completed"   // the record completed while the call waited
	WaitReserved   = "reserved"    // it was released or its lease ran out, and the waiter took over
	WaitInProgress = "in_progress" // the wait ended (wait or deadline) with the lease still held
	WaitMismatch   = "mismatch"    // the record was replaced by one with another fingerprint
	WaitCanceled   = "canceled"    // the caller went away
	WaitError      = "error"       // the store failed (UNAVAILABLE, …) after the wait began
)

// Label values of idem_rejected_total{reason}.
const (
	RejectInflight         = "inflight"
	RejectRate             = "rate_limit"
	RejectTenantInflight   = "tenant_inflight"
	RejectUnauthenticated  = "unauthenticated"
	RejectPermissionDenied = "permission_denied"
	RejectWaiters          = "waiters"
)

// OtherNamespace replaces namespaces beyond the label limit, so a caller
// inventing namespaces cannot grow the metrics without bound.
const OtherNamespace = "_other"

// DefaultMaxNamespaces is how many distinct namespaces get their own label.
const DefaultMaxNamespaces = 1000

var (
	// Store calls take from microseconds (pebble, memory) to seconds (a
	// cross-region CockroachDB transaction under contention), up to the
	// --store-timeout that ends them (10 s by default, so 10 and 30 s).
	storeBuckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	// Waits are bounded by the 30 s wait limit; an in-process wake-up
	// takes well under a millisecond.
	waitBuckets = []float64{.00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	// RPCBuckets are the buckets of grpc_server_handling_seconds: a call
	// served from pebble or memory takes tens of microseconds.
	RPCBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
)

// Metrics are idem's own collectors. Every method is safe on a nil
// *Metrics (it does nothing), so code may hold one unconditionally.
type Metrics struct {
	reserveOutcomes *prometheus.CounterVec
	takeovers       *prometheus.CounterVec
	leaseLost       *prometheus.CounterVec
	waits           *prometheus.CounterVec
	waitDuration    *prometheus.HistogramVec
	storeOp         *prometheus.HistogramVec
	storeErrors     *prometheus.CounterVec
	swept           *sweptCollector
	filter          *filterCollector
	inflight        prometheus.Gauge
	rejected        *prometheus.CounterVec

	maxNamespaces int64
	nsCount       atomic.Int64
	namespaces    sync.Map // namespace → struct{}

	storesMu sync.Mutex
	stores   map[string]int // store label → open instrumented stores
}

// MetricsOption configures Metrics.
type MetricsOption func(*Metrics)

// WithMaxNamespaces sets how many distinct namespaces get their own label
// value; later ones are counted under OtherNamespace.
func WithMaxNamespaces(n int) MetricsOption {
	return func(m *Metrics) { m.maxNamespaces = int64(n) }
}

// NewMetrics creates the collectors; register them with Register (NewRegistry does).
func NewMetrics(opts ...MetricsOption) *Metrics {
	m := &Metrics{
		reserveOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameReserveOutcomes,
			Help: "Reserve answers by namespace and outcome (reserved, completed, in_progress, mismatch); the duplicate hit rate is completed / all."},
			[]string{"namespace", "outcome"}),
		takeovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameTakeovers,
			Help: "Reserves that took over a released key or an expired lease."}, []string{"namespace"}),
		leaseLost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameLeaseLost,
			Help: "Calls refused with LEASE_LOST: the caller's token no longer holds the key. Lost reservations are rpc Complete, Release and BatchComplete; ExtendLease and Checkpoint repeat a loss."}, []string{"namespace", "rpc"}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameWaits,
			Help: "Reserves that waited for an in-progress key, by how the wait ended."}, []string{"namespace", "result"}),
		waitDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: NameWaitDuration,
			Help: "How long Reserves waited for an in-progress key.", Buckets: waitBuckets}, []string{"namespace"}),
		storeOp: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: NameStoreOpDuration,
			Help: "Latency of storage operations by store and operation.", Buckets: storeBuckets}, []string{"store", "op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameStoreErrors,
			Help: "Storage operations that failed (not counting expected answers such as not found or lease lost)."}, []string{"store", "op"}),
		swept:  newSweptCollector(),
		filter: newFilterCollector(),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: NameInflightCalls,
			Help: "RPCs being served now (health checks excluded)."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameRejected,
			Help: "Calls refused before reaching the service, by reason."}, []string{"reason"}),
		maxNamespaces: DefaultMaxNamespaces,
		stores:        map[string]int{},
	}
	for _, o := range opts {
		o(m)
	}
	for _, r := range []string{RejectInflight, RejectRate, RejectTenantInflight, RejectUnauthenticated, RejectPermissionDenied, RejectWaiters} {
		m.rejected.WithLabelValues(r) // export zeros, so rate() works from the first refusal
	}
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.reserveOutcomes, m.takeovers, m.leaseLost, m.waits, m.waitDuration,
		m.storeOp, m.storeErrors, m.swept, m.filter, m.inflight, m.rejected}
}

// Register registers every collector with r.
func (m *Metrics) Register(r prometheus.Registerer) error {
	for _, c := range m.collectors() {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Namespace is the label value for ns: ns itself for the first
// maxNamespaces distinct namespaces, OtherNamespace after.
func (m *Metrics) Namespace(ns string) string {
	if _, ok := m.namespaces.Load(ns); ok {
		return ns
	}
	if m.nsCount.Add(1) > m.maxNamespaces {
		m.nsCount.Add(-1)
		return OtherNamespace
	}
	if _, loaded := m.namespaces.LoadOrStore(ns, struct{}{}); loaded {
		m.nsCount.Add(-1)
	}
	return ns
}

var outcomeLabels = map[storage.Outcome]string{
	storage.OutcomeReserved:   "reserved",
	storage.OutcomeCompleted:  "completed",
	storage.OutcomeInProgress: "in_progress",
	storage.OutcomeMismatch:   "mismatch",
}

// ReserveOutcome counts one Reserve answer (also each BatchReserve item).
func (m *Metrics) ReserveOutcome(ns string, o storage.Outcome) {
	if m == nil {
		return
	}
	l, ok := outcomeLabels[o]
	if !ok {
		l = "unknown"
	}
	m.reserveOutcomes.WithLabelValues(m.Namespace(ns), l).Inc()
}

// Takeover counts a Reserve that took over a released or expired key.
func (m *Metrics) Takeover(ns string) {
	if m == nil {
		return
	}
	m.takeovers.WithLabelValues(m.Namespace(ns)).Inc()
}

// LeaseLost counts a LEASE_LOST answer of rpc (Complete, Release,
// ExtendLease, Checkpoint, BatchComplete).
func (m *Metrics) LeaseLost(ns, rpc string) {
	if m == nil {
		return
	}
	m.leaseLost.WithLabelValues(m.Namespace(ns), rpc).Inc()
}

// Wait records one wait for an in-progress key; result is one of the Wait* values.
func (m *Metrics) Wait(ns, result string, d time.Duration) {
	if m == nil {
		return
	}
	ns = m.Namespace(ns)
	m.waits.WithLabelValues(ns, result).Inc()
	m.waitDuration.WithLabelValues(ns).Observe(d.Seconds())
}

// RecordsSwept counts expired records a store's sweeper deleted, for
// sweepers that push their counts; stores with a Swept() uint64 method are
// read by InstrumentStore instead.
func (m *Metrics) RecordsSwept(store string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.swept.counter(store).Add(uint64(n))
}

// Swepter is a store that counts the expired records its sweeper deleted
// (pebble, cockroach/postgres).
type Swepter interface{ Swept() uint64 }

// sweptCollector exports idem_records_swept_total from counters the
// backends keep themselves, so they need not depend on Prometheus.
type sweptCollector struct {
	desc    *prometheus.Desc
	mu      sync.Mutex
	sources map[string][]*func() uint64
	pushed  map[string]*atomic.Uint64
}

func newSweptCollector() *sweptCollector {
	return &sweptCollector{
		desc:    prometheus.NewDesc(NameRecordsSwept, "Expired records physically deleted by a store's sweeper.", []string{"store"}, nil),
		sources: map[string][]*func() uint64{},
		pushed:  map[string]*atomic.Uint64{},
	}
}

func (c *sweptCollector) counter(store string) *atomic.Uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.pushed[store]
	if !ok {
		n = new(atomic.Uint64)
		c.pushed[store] = n
	}
	return n
}

// addSource adds a store's counter; the returned func, for when that store
// is closed, keeps its last count in the total and lets the store go (a
// policy reload replaces stores, and each would stay reachable otherwise).
func (c *sweptCollector) addSource(store string, f func() uint64) (remove func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	src := &f
	c.sources[store] = append(c.sources[store], src)
	return func() {
		last := f()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.sources[store] = slices.DeleteFunc(c.sources[store], func(g *func() uint64) bool { return g == src })
		n, ok := c.pushed[store]
		if !ok {
			n = new(atomic.Uint64)
			c.pushed[store] = n
		}
		n.Add(last)
	}
}

func (c *sweptCollector) drop(store string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sources, store)
	delete(c.pushed, store)
}

func (c *sweptCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *sweptCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	totals := map[string]uint64{}
	for store, fs := range c.sources {
		for _, f := range fs {
			totals[store] += (*f)()
		}
	}
	for store, n := range c.pushed {
		totals[store] += n.Load()
	}
	for store, n := range totals {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), store)
	}
}

// Filterer is a store that answers some reads from an in-memory filter of
// its keys (pebble): bytes is the filters' memory, answered the reads they
// settled without the store.
type Filterer interface {
	FilterStats() (bytes int64, answered uint64)
}

// filterCollector exports idem_store_filter_bytes and
// idem_store_filter_answered_total for stores that are Filterers.
type filterCollector struct {
	bytes, answered *prometheus.Desc
	mu              sync.Mutex
	sources         map[string][]*func() (int64, uint64)
	answeredGone    map[string]uint64 // answered by stores since closed
}

func newFilterCollector() *filterCollector {
	return &filterCollector{
		bytes: prometheus.NewDesc(NameFilterBytes,
			"Memory of a store's in-memory key filter (pebble's presence filter, outside the Go heap).", []string{"store"}, nil),
		answered: prometheus.NewDesc(NameFilterAnswered,
			"Reads of keys a store's key filter knew were never stored, answered without reading the store.", []string{"store"}, nil),
		sources:      map[string][]*func() (int64, uint64){},
		answeredGone: map[string]uint64{},
	}
}

// addSource adds a store's filter; the returned func, for when that store
// is closed, drops its memory from the gauge and keeps its count.
func (c *filterCollector) addSource(store string, f func() (int64, uint64)) (remove func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	src := &f
	c.sources[store] = append(c.sources[store], src)
	return func() {
		_, last := f()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.sources[store] = slices.DeleteFunc(c.sources[store], func(g *func() (int64, uint64)) bool { return g == src })
		c.answeredGone[store] += last
	}
}

func (c *filterCollector) drop(store string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sources, store)
	delete(c.answeredGone, store)
}

func (c *filterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.answered
}

func (c *filterCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stores := map[string]bool{}
	for store := range c.sources {
		stores[store] = true
	}
	for store := range c.answeredGone {
		stores[store] = true
	}
	for store := range stores {
		var bytes int64
		answered := c.answeredGone[store]
		for _, f := range c.sources[store] {
			b, a := (*f)()
			bytes += b
			answered += a
		}
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(bytes), store)
		ch <- prometheus.MustNewConstMetric(c.answered, prometheus.CounterValue, float64(answered), store)
	}
}

// dropStore forgets the series of store once no open store has its name:
// each policy store has series of its own, and those of the stores
// reloads dropped would otherwise pile up until idemd restarts.
func (m *Metrics) dropStore(store string) {
	m.storesMu.Lock()
	defer m.storesMu.Unlock()
	if m.stores[store]--; m.stores[store] > 0 {
		return
	}
	delete(m.stores, store)
	for _, op := range StoreOps {
		m.storeOp.DeleteLabelValues(store, op)
		m.storeErrors.DeleteLabelValues(store, op)
	}
	m.swept.drop(store)
	m.filter.drop(store)
}

// Rejected counts a call refused before the service; reason is one of the Reject* values.
func (m *Metrics) Rejected(reason string) {
	if m == nil {
		return
	}
	m.rejected.WithLabelValues(reason).Inc()
}

// Inflight is the gauge of calls being served (nil on a nil *Metrics).
func (m *Metrics) Inflight() prometheus.Gauge {
	if m == nil {
		return nil
	}
	return m.inflight
}
