// Package offheap allocates large pointer-free buffers outside the Go
// heap. idemd runs with a GC target of 400%: every live heap byte lets the
// heap grow by four more before a collection, so a store that keeps its
// data on the heap costs about five times that data in RSS. Memory mapped
// here is not counted by the garbage collector, never scanned, and goes
// back to the system when freed.
//
// Only pointer-free data may live in a Block: the garbage collector does
// not see it, so a Go pointer stored there would not keep its target alive.
package offheap

// Block is n bytes from Alloc. B must not be used after Free.
type Block struct {
	B      []byte
	mapped bool
}

// Alloc returns a block of n zeroed bytes: mapped outside the Go heap where
// the platform allows it, else (or if mapping fails) on the heap.
func Alloc(n int) Block {
	if n > 0 {
		if b, ok := mmap(n); ok {
			return Block{B: b, mapped: true}
		}
	}
	return Block{B: make([]byte, n)}
}

// Free returns a mapped block to the system; a heap block is left to the
// garbage collector. Freeing the zero Block does nothing.
func (b *Block) Free() {
	if b.mapped {
		munmap(b.B)
	}
	*b = Block{}
}

// Mapped reports whether the block lies outside the Go heap.
func (b *Block) Mapped() bool { return b.mapped }
