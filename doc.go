// Package idem holds what every part of idem shares without depending on
// each other: the sentinel errors that storage backends return, that the
// server maps to gRPC statuses, and that the client maps back, so that
// errors.Is(err, idem.ErrLeaseLost) holds on both sides of the wire.
//
// The service itself lives in server/, the backends in storage/, and the Go
// client with its interceptors in client/.
package idem
