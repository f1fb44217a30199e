package main

import (
	"errors"
	"fmt"
	"sync"
)

// errKeyReused: the key already charged a different request. idem refuses
// that while it keeps the key (its retention); the ledger keeps keys for
// good, so it must refuse it too rather than answer with another charge.
var errKeyReused = errors.New("payments: idempotency key already used for a different charge")

// charge is what a request asks for.
type charge struct {
	Account     string
	AmountCents int64
	Currency    string
	Description string
}

// entry is one posted charge.
type entry struct {
	charge
	Key          string
	ChargeID     string
	BalanceCents int64 // the account's balance right after this charge
	Token        uint64
}

// Ledger is the payment service's own store: accounts and their charges,
// in memory, guarded by one mutex. Posting is atomic and unique per
// idempotency key, like a unique constraint in a database: if an attempt
// crashed after posting but before idem stored the answer, the next attempt
// finds the entry and answers with it instead of charging again.
type Ledger struct {
	mu       sync.Mutex
	balances map[string]int64
	byKey    map[string]*entry
	entries  []*entry
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{balances: map[string]int64{}, byKey: map[string]*entry{}}
}

// Post charges c once for key. token is the idem fencing token of the
// attempt (0 when idem did not guard the call), kept on the entry. Posting
// is one atomic write, so the unique key alone keeps a charge single; a
// service whose side effect takes several writes would also refuse a token
// older than the last it saw, which is what the token is for.
func (l *Ledger) Post(key string, token uint64, c charge) (entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if key != "" {
		// The entry answers every attempt, whatever its token: once idem
		// forgot the key (its retention) a retry holds token 1 again, and
		// refusing it as stale would fail a charge that went through.
		if e, ok := l.byKey[key]; ok {
			if e.charge != c {
				return entry{}, fmt.Errorf("%w: key %q", errKeyReused, key)
			}
			return *e, nil
		}
	}
	l.balances[c.Account] += c.AmountCents
	e := &entry{
		charge:       c,
		Key:          key,
		ChargeID:     fmt.Sprintf("ch_%06d", len(l.entries)+1),
		BalanceCents: l.balances[c.Account],
		Token:        token,
	}
	l.entries = append(l.entries, e)
	if key != "" {
		l.byKey[key] = e
	}
	return *e, nil
}

// Balance returns an account's balance and its number of charges.
func (l *Ledger) Balance(account string) (int64, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, e := range l.entries {
		if e.Account == account {
			n++
		}
	}
	return l.balances[account], n
}

// Entries returns a copy of every posted charge, in order.
func (l *Ledger) Entries() []entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]entry, len(l.entries))
	for i, e := range l.entries {
		out[i] = *e
	}
	return out
}
