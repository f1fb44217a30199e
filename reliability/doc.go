// Package reliability holds idem's reliability suite: linearizability of
// histories recorded against a real idemd (pebble and PostgreSQL stores),
// kill -9 crash cycles, and network faults between clients, idemd and
// PostgreSQL. The tests build cmd/idemd and run it as a subprocess; the
// model lives in reliability/model, the recording in reliability/harness,
// the TCP fault proxy in reliability/faultproxy, and the soak program in
// reliability/soak. docs/reliability.md lists each promise, the test that
// checks it and the command that runs it.
//
// By default the tests run in a short mode bounded for CI; -reliability.long
// runs longer histories and more crash cycles.
package reliability
