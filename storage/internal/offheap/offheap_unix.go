//go:build unix

package offheap

import "syscall"

func mmap(n int) ([]byte, bool) {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	return b, err == nil
}

func munmap(b []byte) { _ = syscall.Munmap(b) }
