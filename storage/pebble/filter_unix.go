//go:build unix

package pebble

import (
	"sync/atomic"
	"syscall"
	"unsafe"
)

// filterBlocks maps the filter's blocks outside the Go heap: with idemd's
// GC target of 400%, every live heap byte lets the heap grow by four more,
// so a 16 MiB filter on the heap cost about 80 MiB of RSS.
func filterBlocks(n uint64) ([][8]atomic.Uint64, func()) {
	size := int(n * uint64(unsafe.Sizeof([8]atomic.Uint64{})))
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([][8]atomic.Uint64, n), func() {}
	}
	blocks := unsafe.Slice((*[8]atomic.Uint64)(unsafe.Pointer(unsafe.SliceData(mem))), n)
	return blocks, func() { _ = syscall.Munmap(mem) }
}
