// Package harness runs a real idemd as a subprocess, drives it with many
// concurrent clients over gRPC, records every call as a Porcupine operation
// and checks the history against package model. The reliability tests, the
// crash and fault tests and the soak program are built from it.
//
// Calls that fail with UNAVAILABLE, DEADLINE_EXCEEDED or CANCELED are
// recorded with an unknown outcome (their effect may or may not have
// happened); every other error is a definite answer or a test failure.
package harness
