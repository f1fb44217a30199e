//go:build linux

// Package uring runs fsync and fdatasync through one io_uring, so the
// goroutine that waits for the disk parks in Go's network poller instead of
// holding an OS thread in a blocking system call.
//
// A blocking fdatasync costs a Go program more than the call: the thread
// that makes it keeps its P in the syscall state, sysmon takes the P away
// after 20 µs and hands it to another thread, the first thread must find a
// P again when the call returns, and while such hand-offs keep happening
// sysmon never backs off from waking every 20 µs. On a store that syncs its
// log a thousand times a second that was a tenth of the process's CPU. Here
// the sync runs in the kernel's io_uring worker; completions are signalled
// on an eventfd the poller watches.
package uring

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux UAPI values (include/uapi/linux/io_uring.h).
const (
	opFsync          = 3
	fsyncDatasync    = 1
	sqeAsync         = 1 << 4 // IOSQE_ASYNC: straight to a worker, as a sync blocks
	registerEventfd  = 4
	offSQRing        = 0
	offCQRing        = 0x8000000
	offSQEs          = 0x10000000
	featSingleMmap   = 1 << 0
	sqeSize          = 64
	cqeSize          = 16
	defaultEntries   = 64
	eventfdReadBytes = 8
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// Ring is one io_uring used for syncs. It is safe for concurrent use.
type Ring struct {
	fd         int
	rings, sqe []byte // mmaps: SQ and CQ rings (one region or two), SQEs
	cqMap      []byte // the CQ ring's own mapping, without single mmap

	sqTail, sqMask *uint32
	sqArray        unsafe.Pointer
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           unsafe.Pointer

	efd   *os.File
	slots chan struct{} // bounds syncs in flight below the CQ's size
	done  chan struct{} // closed when the completion loop has returned

	mu      sync.Mutex // guards the SQ tail, the waiters and closed
	next    uint64
	waiters map[uint64]chan int32
	closed  bool
}

// New sets up a ring. It fails where io_uring is missing or forbidden (an
// old kernel, kernel.io_uring_disabled, a seccomp profile); callers then
// sync the usual way.
func New() (*Ring, error) {
	var p params
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, defaultEntries, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &Ring{fd: int(fd), waiters: make(map[uint64]chan int32), done: make(chan struct{})}
	if err := r.mapRings(&p); err != nil {
		r.unmap()
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		r.unmap()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	arg := int32(efd)
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerEventfd, uintptr(unsafe.Pointer(&arg)), 1, 0, 0); errno != 0 {
		unix.Close(efd)
		r.unmap()
		return nil, fmt.Errorf("io_uring_register eventfd: %w", errno)
	}
	// A non-blocking descriptor given to os.NewFile joins the poller.
	r.efd = os.NewFile(uintptr(efd), "io_uring-eventfd")
	r.slots = make(chan struct{}, min(p.sqEntries, p.cqEntries))
	go r.complete()
	return r, nil
}

func (r *Ring) mapRings(p *params) error {
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*cqeSize)
	single := p.features&featSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	if r.rings, err = unix.Mmap(r.fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("mmap io_uring SQ ring: %w", err)
	}
	cq := r.rings
	if !single {
		if r.cqMap, err = unix.Mmap(r.fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
			return fmt.Errorf("mmap io_uring CQ ring: %w", err)
		}
		cq = r.cqMap
	}
	if r.sqe, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("mmap io_uring SQEs: %w", err)
	}
	at := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqTail = at(r.rings, p.sqOff.tail)
	r.sqMask = at(r.rings, p.sqOff.ringMask)
	r.sqArray = unsafe.Pointer(&r.rings[p.sqOff.array])
	r.cqHead = at(cq, p.cqOff.head)
	r.cqTail = at(cq, p.cqOff.tail)
	r.cqMask = *at(cq, p.cqOff.ringMask)
	r.cqes = unsafe.Pointer(&cq[p.cqOff.cqes])
	return nil
}

func (r *Ring) unmap() {
	for _, b := range [][]byte{r.sqe, r.cqMap, r.rings} {
		if b != nil {
			_ = unix.Munmap(b)
		}
	}
	r.sqe, r.cqMap, r.rings = nil, nil, nil
	unix.Close(r.fd)
}

// ErrClosed is returned by a sync that finds the ring closed, or that
// Close cut short: then the kernel may still run it, so its outcome is
// unknown and a direct retry could miss an error the ring's sync consumed.
var ErrClosed = errors.New("uring: ring closed")

// ErrNotSubmitted is returned by a sync the kernel did not take (say, it
// was short of memory): nothing was synced, and the caller may sync the
// usual way.
var ErrNotSubmitted = errors.New("uring: sync not submitted")

// enter submits one entry; tests replace it to see the kernel refuse.
var enter = func(fd int) (uintptr, syscall.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), 1, 0, 0, 0, 0)
	return n, errno
}

// Fsync is fsync(2) of fd, or fdatasync(2) when datasync is set, with the
// same result; the caller parks until the kernel completes it.
func (r *Ring) Fsync(fd uintptr, datasync bool) error {
	r.slots <- struct{}{}
	defer func() { <-r.slots }()
	ch := make(chan int32, 1)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	id := r.next
	r.next++
	r.waiters[id] = ch
	tail := *r.sqTail
	idx := tail & *r.sqMask
	sqe := (*[sqeSize]byte)(unsafe.Pointer(&r.sqe[int(idx)*sqeSize]))
	*sqe = [sqeSize]byte{}
	sqe[0] = opFsync
	sqe[1] = sqeAsync
	*(*int32)(unsafe.Pointer(&sqe[4])) = int32(fd)
	if datasync {
		*(*uint32)(unsafe.Pointer(&sqe[28])) = fsyncDatasync
	}
	*(*uint64)(unsafe.Pointer(&sqe[32])) = id
	*(*uint32)(unsafe.Add(r.sqArray, 4*uintptr(idx))) = idx
	atomic.StoreUint32(r.sqTail, tail+1)
	var n uintptr
	var errno syscall.Errno
	for {
		// The sync itself runs in an io_uring worker: enter returns once
		// the entry is taken.
		n, errno = enter(r.fd)
		if errno != unix.EINTR {
			break
		}
	}
	if errno != 0 || n != 1 {
		// The kernel took nothing (an entry it takes and cannot run
		// completes with an error instead), and only enter takes
		// entries, under r.mu: withdraw this one, or the next call's
		// enter would submit it in place of its own and every later
		// sync would wait for the one after it.
		atomic.StoreUint32(r.sqTail, tail)
		delete(r.waiters, id)
		r.mu.Unlock()
		if errno == 0 {
			errno = unix.EAGAIN
		}
		return fmt.Errorf("%w: io_uring_enter: %w", ErrNotSubmitted, errno)
	}
	r.mu.Unlock()
	switch res := <-ch; {
	case res == resClosed:
		return ErrClosed
	case res < 0:
		return syscall.Errno(-res)
	}
	return nil
}

// resClosed is what Close hands a waiter: no errno, so the caller can tell
// a sync whose outcome is unknown (it may still run) from the kernel's
// ECANCELED for one that never ran.
const resClosed = math.MinInt32

// complete reads the eventfd (parked in the poller), then hands every
// completion in the CQ to its waiter.
func (r *Ring) complete() {
	defer close(r.done)
	var buf [eventfdReadBytes]byte
	for {
		if _, err := r.efd.Read(buf[:]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		r.mu.Lock()
		head := atomic.LoadUint32(r.cqHead)
		for tail := atomic.LoadUint32(r.cqTail); head != tail; head++ {
			cqe := unsafe.Add(r.cqes, uintptr(head&r.cqMask)*cqeSize)
			id := *(*uint64)(cqe)
			res := *(*int32)(unsafe.Add(cqe, 8))
			if ch, ok := r.waiters[id]; ok {
				delete(r.waiters, id)
				ch <- res
			}
		}
		atomic.StoreUint32(r.cqHead, head)
		r.mu.Unlock()
	}
}

// Close releases the ring. Syncs still waiting fail with ErrClosed; the
// caller closes the ring once nothing syncs through it any more.
func (r *Ring) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	for id, ch := range r.waiters {
		delete(r.waiters, id)
		ch <- resClosed
	}
	r.mu.Unlock()
	err := r.efd.Close()
	<-r.done
	r.unmap()
	return err
}
