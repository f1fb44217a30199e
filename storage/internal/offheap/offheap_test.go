package offheap

import (
	"runtime"
	"testing"
)

func TestAllocIsZeroedWritableAndFreed(t *testing.T) {
	for _, n := range []int{1, 4096, 1 << 20} {
		b := Alloc(n)
		if len(b.B) != n {
			t.Fatalf("Alloc(%d) has %d bytes", n, len(b.B))
		}
		if runtime.GOOS == "linux" && !b.Mapped() {
			t.Errorf("Alloc(%d) fell back to the heap on linux", n)
		}
		for i, c := range b.B {
			if c != 0 {
				t.Fatalf("Alloc(%d)[%d] = %d, want 0", n, i, c)
			}
		}
		for i := range b.B {
			b.B[i] = byte(i)
		}
		b.Free()
		if b.B != nil || b.Mapped() {
			t.Fatalf("Free left %d bytes, mapped %v", len(b.B), b.Mapped())
		}
		b.Free() // again: harmless
	}
}

func TestAllocZero(t *testing.T) {
	b := Alloc(0)
	if len(b.B) != 0 || b.Mapped() {
		t.Fatalf("Alloc(0) = %d bytes, mapped %v", len(b.B), b.Mapped())
	}
	b.Free()
}
