// Package storagetest is the conformance suite every idem storage backend
// passes unchanged. A backend's test is a small harness:
//
//	type harness struct{}
//
//	func (harness) MakeStore(ctx context.Context, t *testing.T) (storage.Store, storagetest.Clock) {
//		clock := clockwork.NewFakeClock()
//		return mybackend.New(mybackend.WithClock(clock)), clock
//	}
//
//	func TestConformance(t *testing.T) { storagetest.RunConformanceTests(t, harness{}) }
//
// The suite checks every rule of the storage package documentation: each
// row of the Reserve table, Complete/Release/ExtendLease/Checkpoint with
// their exact timestamps, fencing after a takeover, idempotent retries,
// expiry as absence with per-record retention, checkpoints surviving
// takeovers, batch order, per-item errors and agreement with the single
// calls, the admin calls, tenant and namespace isolation at the longest IDs,
// that returned records are copies, races of 64 goroutines, and Close.
//
// What it requires beyond the state machine, so backends agree:
//   - every Reserve outcome comes with the record (for MISMATCH, the stored
//     one, unchanged);
//   - List orders keys bytewise (no collation) and treats KeyPrefix
//     literally (no LIKE or glob wildcards);
//   - Stats rows are sorted as storage.SortStats and omit zero counts;
//   - stored times keep at least millisecond precision;
//   - after Close every method, Ping included, fails with an error that
//     errors.Is storage.ErrClosed, and a second Close returns nil or
//     ErrClosed.
//
// Time: the suite moves the store's clock with Clock.Advance and never
// sleeps. If the harness's clock also implements NowClock (clockwork's
// FakeClock does), the suite checks absolute timestamps and the exact
// expiry boundaries; stores whose now is a database server's clock plus an
// offset get the same checks relative to the record's own timestamps, with
// a few seconds of allowance for real time passing.
//
// Each subtest makes its own store with MakeStore and uses its own tenant,
// so backends whose stores share one database do not see each other's
// records. RunBenchmarks measures every Store operation through a
// BenchHarness.
package storagetest
