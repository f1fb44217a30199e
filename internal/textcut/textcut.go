// Package textcut bounds callers' strings that idem repeats in logs,
// errors and records, cutting them on a UTF-8 boundary so the cut text
// stays valid. It imports nothing but the standard library, so client/ can
// use it too.
package textcut

import (
	"strconv"
	"unicode/utf8"
)

// Prefix is s cut to at most n bytes, never inside a UTF-8 sequence.
func Prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Bounded is s when it fits in n bytes, else its Prefix followed by its
// length, so a line about an oversized value still says what was sent.
func Bounded(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return Prefix(s, n) + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
