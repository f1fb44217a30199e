// Package ctl is idemctl: the operator CLI of idem (reserve, complete,
// release, lookup, list, delete, force-release, stats, health) and its load
// tool (bench, driving package loadgen). cmd/idemctl only calls Main, so
// every command runs in-process in tests against a real server.
//
// Exit codes: 0 success; 1 a failed command, including a missing record
// and a bench in which any call failed; 2 bad usage; 3 idem cannot be
// reached; 4 credentials refused. reserve exits 0 only for RESERVED, and 5,
// 6, 7 for COMPLETED, IN_PROGRESS, MISMATCH, so that
// `idemctl reserve NS KEY && work` runs work only when it took the key.
package ctl
