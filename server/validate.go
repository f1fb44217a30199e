package server

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/internal/textcut"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
)

// violations collects every bad field of a request, so one error names
// them all instead of making the caller fix them one round trip at a time.
type violations []*errdetails.BadRequest_FieldViolation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// message names every bad field: "idem: invalid request: key is required; fingerprint is 65 bytes, more than 64".
func (v violations) message() string {
	var b strings.Builder
	b.WriteString("idem: invalid request: ")
	for i, f := range v {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.Field)
		b.WriteString(" ")
		b.WriteString(f.Description)
	}
	return b.String()
}

func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	st, err := status.New(codes.InvalidArgument, v.message()).WithDetails(&errdetails.BadRequest{FieldViolations: v})
	if err != nil {
		return status.Error(codes.InvalidArgument, v.message())
	}
	return st.Err()
}

// checkText checks a string field: printable UTF-8 of at most max bytes,
// and not empty when required.
func (v *violations) checkText(field, s string, maxBytes int, required bool) {
	switch {
	case s == "":
		if required {
			v.add(field, "is required")
		}
		return
	case len(s) > maxBytes:
		v.add(field, "is %d bytes, more than %d", len(s), maxBytes)
		return
	}
	if printableASCII(s) {
		return
	}
	if !utf8.ValidString(s) {
		v.add(field, "is not valid UTF-8")
		return
	}
	for i, r := range s {
		if !unicode.IsPrint(r) {
			v.add(field, "has a non-printable character %U at byte %d", r, i)
			return
		}
	}
}

// NamespaceProblem says why idem refuses ns as a namespace under a limit
// of maxBytes, in the words a request's refusal uses ("is 300 bytes, more
// than 256"), or returns "": configuration naming such a namespace, or a
// prefix of one, could never apply.
func NamespaceProblem(ns string, maxBytes int) string {
	if maxBytes <= 0 {
		maxBytes = math.MaxInt // no limit given
	}
	var v violations
	v.checkText("namespace", ns, maxBytes, false)
	if len(v) == 0 {
		return ""
	}
	return v[0].Description
}

// printableASCII is the common case, checked without decoding runes.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

func (v *violations) checkBytes(field string, b []byte, maxBytes int) {
	if len(b) > maxBytes {
		v.add(field, "is %d bytes, more than %d", len(b), maxBytes)
	}
}

// checkDuration returns def for an absent or zero duration, and reports a
// malformed, negative or out-of-range one.
func (v *violations) checkDuration(field string, d *durationpb.Duration, lo, hi, def time.Duration) time.Duration {
	if d == nil || (d.Seconds == 0 && d.Nanos == 0) {
		return def
	}
	if err := d.CheckValid(); err != nil {
		v.add(field, "is not a valid duration")
		return def
	}
	got := d.AsDuration()
	switch {
	case got < 0:
		v.add(field, "is negative (%s)", durationText(d, got))
	case got < lo:
		v.add(field, "is %v, less than the minimum %v", got, lo)
	case got > hi:
		v.add(field, "is %s, more than the maximum %v", durationText(d, got), hi)
	default:
		return got
	}
	return def
}

// durationText is d as the caller sent it. AsDuration saturates past
// time.Duration's ±292 years (a Duration may reach ±10,000), and the
// saturated 2562047h47m16.854775807s would misstate the request; such
// values are shown as seconds.
func durationText(d *durationpb.Duration, got time.Duration) string {
	if got != math.MaxInt64 && got != math.MinInt64 {
		return got.String()
	}
	sec, nanos := d.GetSeconds(), d.GetNanos()
	if nanos == 0 {
		return fmt.Sprintf("%ds", sec)
	}
	sign := ""
	if sec < 0 || nanos < 0 {
		sign, sec, nanos = "-", -sec, -nanos
	}
	return fmt.Sprintf("%s%d.%09ds", sign, sec, nanos)
}

func (v *violations) checkToken(field string, token uint64) {
	if token == 0 {
		v.add(field, "is required (the token Reserve returned)")
	}
}

// checkResult converts a result and checks its size, and that its strings
// are UTF-8: idem.v1's decoder (internal/codec) does not check them, and a
// stored result with invalid UTF-8 would fail every replay in a client that
// decodes with protobuf-go.
func (v *violations) checkResult(field string, r *idemv1.Result, maxBytes int) *storage.Result {
	res := resultFromProto(r)
	if n := resultSize(res); n > maxBytes {
		v.add(field, "is %d bytes, more than %d", n, maxBytes)
	}
	if res == nil {
		return nil
	}
	if !utf8.ValidString(res.Message) {
		v.add(field+".message", "is not valid UTF-8")
	}
	for k, val := range res.Metadata {
		if !utf8.ValidString(k) {
			v.add(field+".metadata", "has a key that is not valid UTF-8 (%s)", quoteShort(k))
		} else if !utf8.ValidString(val) {
			v.add(fmt.Sprintf("%s.metadata[%s]", field, quoteShort(k)), "is not valid UTF-8")
		}
	}
	for i, d := range res.Details {
		if !utf8.ValidString(d.TypeURL) {
			v.add(fmt.Sprintf("%s.details[%d].type_url", field, i), "is not valid UTF-8")
		}
	}
	return res
}

// resultSize is storage.Result.Size with each detail and metadata entry
// counted as at least idem.ResultEntryMinBytes.
func resultSize(r *storage.Result) int {
	if r == nil {
		return 0
	}
	n := r.Size()
	for _, d := range r.Details {
		n += max(0, idem.ResultEntryMinBytes-len(d.TypeURL)-len(d.Value))
	}
	for k, val := range r.Metadata {
		n += max(0, idem.ResultEntryMinBytes-len(k)-len(val))
	}
	return n
}

// checkKey checks a record key.
func (s *Service) checkKey(v *violations, field, key string) {
	v.checkText(field, key, s.opts.limits.MaxKeyBytes, true)
}

// maxQuoted bounds a caller's string quoted in an error: enough to find
// it, while a metadata key may be a megabyte, and errors reach logs.
const maxQuoted = 64

// quoteShort is s quoted, cut to maxQuoted bytes with its length after.
func quoteShort(s string) string {
	if len(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q…(%d bytes)", textcut.Prefix(s, maxQuoted), len(s))
}
