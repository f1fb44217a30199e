package model

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// TestModelRefusesTakeoverOfLiveLease: leases never run out in the model,
// so a second RESERVED for a key still IN_PROGRESS is a violation even when
// it carries the next token (what a store that takes over a live lease
// answers), sequential or concurrent.
func TestModelRefusesTakeoverOfLiveLease(t *testing.T) {
	for name, h := range map[string][]porcupine.Operation{
		"sequential": {
			op(0, 0, 1, reserve("a"), reserved1),
			op(1, 2, 3, reserve("a"), reserved2),
		},
		"concurrent": {
			op(0, 0, 10, reserve("a"), reserved1),
			op(1, 1, 9, reserve("a"), reserved2),
		},
		"then the first holder is fenced": {
			op(0, 0, 1, reserve("a"), reserved1),
			op(1, 2, 3, reserve("a"), reserved2),
			op(0, 4, 5, complete("a", 1, "r"), leaseLost),
		},
	} {
		if got := porcupine.CheckOperations(Model, h); got {
			t.Errorf("%s: CheckOperations() = true, want false: a live lease was taken over", name)
		}
	}
}
