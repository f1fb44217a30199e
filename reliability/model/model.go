package model

import (
	"fmt"
	"hash/fnv"
	"math"

	"github.com/anishathalye/porcupine"
)

// Kind is an operation of the idempotency service.
type Kind uint8

const (
	Reserve Kind = iota + 1
	Complete
	Release
	Lookup
)

func (k Kind) String() string {
	switch k {
	case Reserve:
		return "Reserve"
	case Complete:
		return "Complete"
	case Release:
		return "Release"
	case Lookup:
		return "Lookup"
	}
	return "Kind(?)"
}

// State is a record's state as the model sees it.
type State uint8

const (
	Absent State = iota
	InProgress
	Completed
	Released
)

func (s State) String() string {
	switch s {
	case Absent:
		return "absent"
	case InProgress:
		return "IN_PROGRESS"
	case Completed:
		return "COMPLETED"
	case Released:
		return "RELEASED"
	}
	return "State(?)"
}

// Outcome is a Reserve's answer.
type Outcome uint8

const (
	Reserved Outcome = iota + 1
	OutcomeCompleted
	OutcomeInProgress
	Mismatch
)

func (o Outcome) String() string {
	switch o {
	case Reserved:
		return "RESERVED"
	case OutcomeCompleted:
		return "COMPLETED"
	case OutcomeInProgress:
		return "IN_PROGRESS"
	case Mismatch:
		return "MISMATCH"
	}
	return "Outcome(?)"
}

// Err is the error class of a Complete, Release or Lookup.
type Err uint8

const (
	OK        Err = iota
	NotFound      // NOT_FOUND
	LeaseLost     // FAILED_PRECONDITION, reason LEASE_LOST
)

func (e Err) String() string {
	switch e {
	case OK:
		return "ok"
	case NotFound:
		return "NOT_FOUND"
	case LeaseLost:
		return "LEASE_LOST"
	}
	return "Err(?)"
}

// Input is a call. Results are compared by Result alone, so callers encode
// the whole stored result (code, body, …) into it, e.g. as a digest.
type Input struct {
	Kind        Kind
	Key         string
	Fingerprint string // Reserve
	Token       uint64 // Complete, Release
	Result      string // Complete
}

// Output is an answer. Unknown marks a call whose outcome the client never
// learned; every other field is then ignored.
type Output struct {
	Unknown bool
	Outcome Outcome // Reserve
	Err     Err     // Complete, Release, Lookup
	State   State   // the record the answer carries (Lookup; Reserve except MISMATCH)
	Token   uint64  // the record's token, where the answer carries one
	Result  string  // the record's result, when COMPLETED
}

// UnknownReturn is the Return time of a call with an unknown outcome.
const UnknownReturn = math.MaxInt64

// rec is one key's state; comparable, so == is the model's equality.
type rec struct {
	State       State
	Fingerprint string
	Token       uint64
	Result      string
}

// Step applies in to st. It returns whether out is an answer the contract
// allows in st, and the next state.
func step(st rec, in Input, out Output) (bool, rec) {
	next, want := apply(st, in)
	if out.Unknown {
		return true, next
	}
	return matches(in.Kind, want, out), next
}

// apply is the state machine of the design contract with no lease or
// retention ever running out: the next state and the answer.
func apply(st rec, in Input) (rec, Output) {
	switch in.Kind {
	case Reserve:
		switch {
		case st.State == Absent:
			n := rec{State: InProgress, Fingerprint: in.Fingerprint, Token: 1}
			return n, Output{Outcome: Reserved, State: InProgress, Token: 1}
		case st.Fingerprint != in.Fingerprint:
			return st, Output{Outcome: Mismatch}
		case st.State == Completed:
			return st, Output{Outcome: OutcomeCompleted, State: Completed, Token: st.Token, Result: st.Result}
		case st.State == InProgress:
			return st, Output{Outcome: OutcomeInProgress, State: InProgress, Token: st.Token}
		}
		n := rec{State: InProgress, Fingerprint: st.Fingerprint, Token: st.Token + 1}
		return n, Output{Outcome: Reserved, State: InProgress, Token: n.Token}
	case Complete:
		switch {
		case st.State == Absent:
			return st, Output{Err: NotFound}
		case st.Token != in.Token:
			return st, Output{Err: LeaseLost}
		case st.State == Completed:
			if st.Result == in.Result {
				return st, Output{State: Completed, Token: st.Token, Result: st.Result}
			}
			return st, Output{Err: LeaseLost}
		case st.State == Released:
			return st, Output{Err: LeaseLost}
		}
		n := st
		n.State, n.Result = Completed, in.Result
		return n, Output{State: Completed, Token: n.Token, Result: n.Result}
	case Release:
		switch {
		case st.State == Absent:
			return st, Output{Err: NotFound}
		case st.Token != in.Token, st.State == Completed:
			return st, Output{Err: LeaseLost}
		}
		n := st
		n.State = Released
		return n, Output{State: Released, Token: n.Token}
	case Lookup:
		if st.State == Absent {
			return st, Output{Err: NotFound}
		}
		o := Output{State: st.State, Token: st.Token}
		if st.State == Completed {
			o.Result = st.Result
		}
		return st, o
	}
	panic(fmt.Sprintf("model: unknown operation kind %d", in.Kind))
}

// matches compares only the fields the operation's answer carries.
func matches(k Kind, want, got Output) bool {
	switch k {
	case Reserve:
		if want.Outcome != got.Outcome {
			return false
		}
		if want.Outcome == Mismatch {
			return true
		}
		return want.State == got.State && want.Token == got.Token && want.Result == got.Result
	case Complete, Release:
		if want.Err != got.Err {
			return false
		}
		if want.Err != OK {
			return true
		}
		return want.State == got.State && want.Token == got.Token && want.Result == got.Result
	case Lookup:
		if want.Err != got.Err {
			return false
		}
		return want.Err != OK || want.State == got.State && want.Token == got.Token && want.Result == got.Result
	}
	return false
}

// Model is idem's per-key state machine for Porcupine.
var Model = porcupine.Model{
	Partition: partition,
	Init:      func() any { return rec{} },
	Step: func(state, input, output any) (bool, any) {
		return step(state.(rec), input.(Input), output.(Output))
	},
	Hash: func(state any) uint64 {
		s := state.(rec)
		h := fnv.New64a()
		fmt.Fprintf(h, "%d|%s|%d|%s", s.State, s.Fingerprint, s.Token, s.Result)
		return h.Sum64()
	},
	DescribeOperation: describe,
	DescribeState: func(state any) string {
		s := state.(rec)
		if s.State == Absent {
			return "absent"
		}
		return fmt.Sprintf("%s token=%d fp=%s result=%q", s.State, s.Token, s.Fingerprint, s.Result)
	},
}

func partition(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	var order []string
	for _, op := range history {
		k := op.Input.(Input).Key
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], op)
	}
	out := make([][]porcupine.Operation, 0, len(order))
	for _, k := range order {
		out = append(out, byKey[k])
	}
	return out
}

func describe(input, output any) string {
	in, out := input.(Input), output.(Output)
	var call string
	switch in.Kind {
	case Reserve:
		call = fmt.Sprintf("Reserve(%s, fp=%s)", in.Key, in.Fingerprint)
	case Complete:
		call = fmt.Sprintf("Complete(%s, token=%d, %q)", in.Key, in.Token, in.Result)
	case Release:
		call = fmt.Sprintf("Release(%s, token=%d)", in.Key, in.Token)
	case Lookup:
		call = fmt.Sprintf("Lookup(%s)", in.Key)
	}
	return call + " -> " + out.String(in.Kind)
}

// String describes an answer to an operation of kind k.
func (o Output) String(k Kind) string {
	if o.Unknown {
		return "unknown"
	}
	rec := func() string {
		s := fmt.Sprintf("%s token=%d", o.State, o.Token)
		if o.State == Completed {
			s += fmt.Sprintf(" result=%q", o.Result)
		}
		return s
	}
	switch k {
	case Reserve:
		s := o.Outcome.String()
		if o.Outcome != Mismatch {
			s += fmt.Sprintf(" token=%d", o.Token)
		}
		if o.Outcome == OutcomeCompleted {
			s += fmt.Sprintf(" result=%q", o.Result)
		}
		return s
	default:
		if o.Err != OK {
			return o.Err.String()
		}
		return rec()
	}
}
