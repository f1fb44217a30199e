// Package faultproxy is a TCP proxy for tests that injects the network
// faults the reliability suite needs: latency, a blackhole (connections stay
// open and nothing passes, as when packets are dropped), resets of every open
// connection, and refusal of new ones (a server that is down).
//
// It is small on purpose: Toxiproxy as a library brings an HTTP API, a
// metrics stack and many dependencies for the same four faults.
package faultproxy
