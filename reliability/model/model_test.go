package model

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// op builds a history entry; ret == 0 means an unknown outcome.
func op(client int, call, ret int64, in Input, out Output) porcupine.Operation {
	if ret == 0 {
		ret, out = UnknownReturn, Output{Unknown: true}
	}
	return porcupine.Operation{ClientId: client, Call: call, Return: ret, Input: in, Output: out}
}

func reserve(key string) Input { return Input{Kind: Reserve, Key: key, Fingerprint: "f"} }
func complete(key string, token uint64, result string) Input {
	return Input{Kind: Complete, Key: key, Token: token, Result: result}
}
func release(key string, token uint64) Input { return Input{Kind: Release, Key: key, Token: token} }
func lookup(key string) Input                { return Input{Kind: Lookup, Key: key} }

var (
	reserved1   = Output{Outcome: Reserved, State: InProgress, Token: 1}
	reserved2   = Output{Outcome: Reserved, State: InProgress, Token: 2}
	inProgress1 = Output{Outcome: OutcomeInProgress, State: InProgress, Token: 1}
	completedR  = Output{State: Completed, Token: 1, Result: "r"}
	leaseLost   = Output{Err: LeaseLost}
	notFound    = Output{Err: NotFound}
)

func TestModel(t *testing.T) {
	tests := []struct {
		name    string
		history []porcupine.Operation
		want    bool
	}{
		{"empty", nil, true},
		{"one winner among concurrent reserves, then complete and replay", []porcupine.Operation{
			op(0, 0, 10, reserve("a"), reserved1),
			op(1, 1, 9, reserve("a"), inProgress1),
			op(2, 2, 8, lookup("a"), Output{State: InProgress, Token: 1}),
			op(0, 11, 20, complete("a", 1, "r"), completedR),
			op(1, 21, 30, reserve("a"), Output{Outcome: OutcomeCompleted, State: Completed, Token: 1, Result: "r"}),
			op(2, 21, 30, lookup("a"), completedR),
			op(3, 31, 32, complete("a", 1, "r"), completedR),
			op(3, 33, 34, complete("a", 1, "other"), leaseLost),
			op(3, 35, 36, Input{Kind: Reserve, Key: "a", Fingerprint: "g"}, Output{Outcome: Mismatch}),
		}, true},
		{"lookup of a key never reserved", []porcupine.Operation{
			op(0, 0, 1, lookup("b"), notFound),
			op(0, 2, 3, complete("b", 1, "r"), notFound),
			op(0, 4, 5, release("b", 1), notFound),
		}, true},
		{"release lets the next reserve take over with a larger token", []porcupine.Operation{
			op(0, 0, 1, reserve("a"), reserved1),
			op(0, 2, 3, release("a", 1), Output{State: Released, Token: 1}),
			op(0, 4, 5, release("a", 1), Output{State: Released, Token: 1}),
			op(1, 6, 7, reserve("a"), reserved2),
			op(0, 8, 9, complete("a", 1, "stale"), leaseLost),
			op(1, 10, 11, complete("a", 2, "r"), Output{State: Completed, Token: 2, Result: "r"}),
		}, true},
		{"keys are independent", []porcupine.Operation{
			op(0, 0, 10, reserve("a"), reserved1),
			op(1, 0, 10, reserve("b"), reserved1),
		}, true},
		{"two RESERVED for one key without release", []porcupine.Operation{
			op(0, 0, 10, reserve("a"), reserved1),
			op(1, 1, 9, reserve("a"), reserved1),
		}, false},
		{"takeover reuses the token", []porcupine.Operation{
			op(0, 0, 1, reserve("a"), reserved1),
			op(0, 2, 3, release("a", 1), Output{State: Released, Token: 1}),
			op(1, 4, 5, reserve("a"), reserved1),
		}, false},
		{"acknowledged complete lost", []porcupine.Operation{
			op(0, 0, 1, reserve("a"), reserved1),
			op(0, 2, 3, complete("a", 1, "r"), completedR),
			op(1, 4, 5, lookup("a"), Output{State: InProgress, Token: 1}),
		}, false},
		{"acknowledged complete changed", []porcupine.Operation{
			op(0, 0, 1, reserve("a"), reserved1),
			op(0, 2, 3, complete("a", 1, "r"), completedR),
			op(1, 4, 5, reserve("a"), Output{Outcome: OutcomeCompleted, State: Completed, Token: 1, Result: "x"}),
		}, false},
		{"two completes with different results both acknowledged", []porcupine.Operation{
			op(0, 0, 1, reserve("a"), reserved1),
			op(0, 2, 5, complete("a", 1, "r"), completedR),
			op(1, 2, 5, complete("a", 1, "x"), Output{State: Completed, Token: 1, Result: "x"}),
		}, false},
		{"record vanishes", []porcupine.Operation{
			op(0, 0, 1, reserve("a"), reserved1),
			op(1, 2, 3, lookup("a"), notFound),
		}, false},
		{"unknown reserve that took effect", []porcupine.Operation{
			op(0, 0, 0, reserve("a"), Output{}),
			op(1, 5, 6, reserve("a"), inProgress1),
		}, true},
		{"unknown reserve that did not take effect", []porcupine.Operation{
			op(0, 0, 0, reserve("a"), Output{}),
			op(1, 5, 6, reserve("a"), reserved1),
			op(1, 7, 8, lookup("a"), Output{State: InProgress, Token: 1}),
		}, true},
		{"unknown complete that took effect", []porcupine.Operation{
			op(0, 0, 1, reserve("a"), reserved1),
			op(0, 2, 0, complete("a", 1, "r"), Output{}),
			op(1, 5, 6, lookup("a"), completedR),
		}, true},
		{"unknown complete that did not take effect", []porcupine.Operation{
			op(0, 0, 1, reserve("a"), reserved1),
			op(0, 2, 0, complete("a", 1, "r"), Output{}),
			op(1, 5, 6, lookup("a"), Output{State: InProgress, Token: 1}),
		}, true},
		{"unknown complete cannot be undone once seen", []porcupine.Operation{
			op(0, 0, 1, reserve("a"), reserved1),
			op(0, 2, 0, complete("a", 1, "r"), Output{}),
			op(1, 5, 6, lookup("a"), completedR),
			op(1, 7, 8, lookup("a"), Output{State: InProgress, Token: 1}),
		}, false},
		{"unknown call is no excuse for a result nobody wrote", []porcupine.Operation{
			op(0, 0, 1, reserve("a"), reserved1),
			op(0, 2, 0, complete("a", 1, "r"), Output{}),
			op(1, 5, 6, lookup("a"), Output{State: Completed, Token: 1, Result: "x"}),
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := porcupine.CheckOperations(Model, tt.history)
			if got != tt.want {
				t.Errorf("CheckOperations() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	got := Model.DescribeOperation(complete("a", 3, "r"), Output{State: Completed, Token: 3, Result: "r"})
	want := `Complete(a, token=3, "r") -> COMPLETED token=3 result="r"`
	if got != want {
		t.Errorf("DescribeOperation() = %q, want %q", got, want)
	}
}
