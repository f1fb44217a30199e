//go:build !linux

package uring

import "errors"

// Ring is not available off Linux.
type Ring struct{}

// ErrClosed is returned by a sync that finds the ring closed.
var ErrClosed = errors.New("uring: ring closed")

// ErrNotSubmitted is returned by a sync the kernel did not take.
var ErrNotSubmitted = errors.New("uring: sync not submitted")

// New fails: io_uring is Linux's.
func New() (*Ring, error) { return nil, errors.New("io_uring is only on Linux") }

// Fsync is never reached: New fails.
func (r *Ring) Fsync(fd uintptr, datasync bool) error { return errors.New("io_uring is only on Linux") }

// Close does nothing.
func (r *Ring) Close() error { return nil }
