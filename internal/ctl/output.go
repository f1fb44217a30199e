package ctl

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// EmitUnpopulated: every field is always there, so scripts need no special
// case for an empty list or a zero code.
var jsonOpts = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

func writeProtoJSON(w io.Writer, m proto.Message) error {
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		return err
	}
	// protojson varies its spacing between builds on purpose; re-indent so
	// the bytes scripts see do not change with an upgrade.
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = out.WriteTo(w)
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func outcomeName(o idemv1.ReserveOutcome) string {
	return strings.TrimPrefix(o.String(), "RESERVE_OUTCOME_")
}

func stateName(s idemv1.RecordState) string {
	return strings.TrimPrefix(s.String(), "RECORD_STATE_")
}

func fmtTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format("2006-01-02T15:04:05.000Z")
}

// word shows a key, namespace or tenant so that it reads unambiguously in a
// table and pastes back as one shell argument: as is when every character
// is plainly safe, else in single quotes ('a ' differs from a, and spaces
// cannot forge columns). Text with a non-printable rune, which idemd does
// not accept, is Go-quoted so it cannot reach the terminal raw.
func word(s string) string {
	safe := func(r rune) bool {
		return r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:/@+=,%", r))
	}
	switch {
	case s != "" && !strings.ContainsFunc(s, func(r rune) bool { return !safe(r) }):
		return s
	case !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }):
		return strconv.Quote(s)
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// printable shows a body as text when it is short printable UTF-8 (line
// breaks and tabs included: a JSON file's body ends in a newline), quoted
// so they cannot reach the terminal raw, else its size and a hex prefix.
func printable(b []byte) string {
	if len(b) == 0 {
		return "-"
	}
	const maxShown = 80
	if utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return r < 0x20 && r != '\t' && r != '\n' && r != '\r' }) {
		if len(b) <= maxShown {
			return strconv.Quote(string(b))
		}
		n := maxShown // cut at a rune boundary, not inside a character
		for n > 0 && !utf8.RuneStart(b[n]) {
			n--
		}
		return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(string(b[:n])), len(b))
	}
	n := min(len(b), 32)
	return fmt.Sprintf("%d bytes, hex %s", len(b), hex.EncodeToString(b[:n]))
}

// writeRecord shows one record as FIELD VALUE lines, after any extra pairs.
func writeRecord(w io.Writer, rec *idemv1.Record, extra ...[2]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	for _, e := range extra {
		fmt.Fprintf(tw, "%s\t%s\n", e[0], e[1])
	}
	if rec == nil {
		return
	}
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("tenant", word(rec.GetTenant()))
	row("namespace", word(rec.GetNamespace()))
	row("key", word(rec.GetKey()))
	row("state", stateName(rec.GetState()))
	row("token", strconv.FormatUint(rec.GetToken(), 10))
	row("attempts", strconv.FormatUint(uint64(rec.GetAttempts()), 10))
	if fp := rec.GetFingerprint(); len(fp) > 0 {
		row("fingerprint", hex.EncodeToString(fp))
	}
	row("created", fmtTime(rec.GetCreatedAt()))
	if rec.GetState() == idemv1.RecordState_RECORD_STATE_IN_PROGRESS {
		row("lease expires", fmtTime(rec.GetLeaseExpiresAt()))
	}
	if rec.GetCompletedAt() != nil {
		row("completed", fmtTime(rec.GetCompletedAt()))
	}
	row("expires", fmtTime(rec.GetExpiresAt()))
	if res := rec.GetResult(); res != nil {
		row("result code", strconv.Itoa(int(res.GetCode())))
		if res.GetMessage() != "" {
			// Quoted: a caller chose it, and a newline or an escape
			// sequence would forge rows of this table on the terminal.
			row("result message", strconv.Quote(res.GetMessage()))
		}
		row("result body", printable(res.GetBody()))
	}
	if cp := rec.GetCheckpoint(); cp != nil {
		row("checkpoint", fmt.Sprintf("%s (%d bytes)", strconv.Quote(cp.GetPhase()), len(cp.GetData())))
	}
}

func writeRecords(w io.Writer, recs []*idemv1.Record) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	// LEASE is when an IN_PROGRESS record's holder loses it: what an
	// operator checks before a force-release (a lease already past is
	// taken over by the next Reserve anyway).
	fmt.Fprintln(tw, "NAMESPACE\tKEY\tSTATE\tTOKEN\tATTEMPTS\tCREATED\tLEASE\tEXPIRES")
	for _, r := range recs {
		lease := "-"
		if r.GetState() == idemv1.RecordState_RECORD_STATE_IN_PROGRESS {
			lease = fmtTime(r.GetLeaseExpiresAt())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", word(r.GetNamespace()), word(r.GetKey()), stateName(r.GetState()), r.GetToken(), r.GetAttempts(),
			fmtTime(r.GetCreatedAt()), lease, fmtTime(r.GetExpiresAt()))
	}
}

func writeStats(w io.Writer, s *idemv1.StatsResponse) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "NAMESPACE\tSTATE\tCOUNT")
	var total int64
	for _, r := range s.GetRows() {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", word(r.GetNamespace()), stateName(r.GetState()), r.GetCount())
		total += r.GetCount()
	}
	fmt.Fprintf(tw, "total\t\t%d\n", total)
}
