package pebble

// growStack grows the calling goroutine's stack to fit a Get and a synced
// commit before they run. gRPC runs most calls on fresh goroutines with
// small stacks, and Pebble's read path is deep: left alone, the stack
// grows in the middle of a Get, copying and re-adjusting every frame of a
// deep call chain (about 7 µs of a Reserve's CPU on idemd). Growing once,
// while the stack is still shallow, costs under half of that. A goroutine
// whose stack is already large enough pays only for zeroing the array.
//
//go:noinline
func growStack(i int) byte {
	var buf [8 << 10]byte
	return buf[i&(len(buf)-1)]
}
