package consumer_test

import (
	"errors"
	"sync"
)

// fencedTable is a downstream that keeps one row per message and refuses a
// write carrying a token older than the newest it has seen for that message.
type fencedTable struct {
	mu     sync.Mutex
	tokens map[string]uint64
}

func newFencedTable() *fencedTable { return &fencedTable{tokens: map[string]uint64{}} }

func (f *fencedTable) write(key string, token uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if token < f.tokens[key] {
		return errors.New("stale token")
	}
	f.tokens[key] = token
	return nil
}

func (f *fencedTable) rows() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.tokens)
}
