// Package ctl is idemctl: the operator CLI of idem (reserve, complete,
// release, lookup, list, delete, force-release, stats, health) and its load
// tool (bench, driving package loadgen). cmd/idemctl only calls Main, so
// every command runs in-process in tests against a real server.
//
// Exit codes: 0 success; 1 a failed command, including a missing record;
// 2 bad usage; 3 idem cannot be reached; 4 credentials refused.
package ctl
