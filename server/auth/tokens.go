package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxTenantLen is the longest tenant a credential may name, as in the API's limits.
const MaxTenantLen = 128

// tokenPrefix marks idem's minted tokens, so secret scanners can find leaked ones.
const tokenPrefix = "idem_"

// HashToken returns the tokens-file form of a bearer token's hash:
// "sha256:" and 64 lower-case hex digits.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// MintToken creates a random bearer token (256 bits) for tenant and role and
// returns it with the tokens-file line that accepts it. The token is shown
// once; only the line is stored. A zero expires means the token never expires.
func MintToken(tenant string, role Role, expires time.Time, name string) (token, line string, err error) {
	if err := checkTenant(tenant); err != nil {
		return "", "", err
	}
	if _, ok := parseRole(string(role)); !ok {
		return "", "", fmt.Errorf("idem: unknown role %q (want client or admin)", role)
	}
	if err := checkName(name); err != nil {
		return "", "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("idem: generate token: %w", err)
	}
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	line = fmt.Sprintf("%s tenant=%s role=%s", HashToken(token), tenant, role)
	if !expires.IsZero() {
		line += " expires=" + expires.UTC().Format(time.RFC3339)
	}
	if name != "" {
		line += " name=" + name
	}
	return token, line, nil
}

func checkTenant(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("idem: empty tenant")
	case len(t) > MaxTenantLen:
		return fmt.Errorf("idem: tenant longer than %d bytes", MaxTenantLen)
	case strings.ContainsAny(t, " \t\r\n=#"):
		return fmt.Errorf("idem: tenant %q contains a space, '=' or '#'", t)
	case !utf8.ValidString(t):
		return fmt.Errorf("idem: tenant %q is not valid UTF-8", t)
	}
	// The API refuses such a tenant in a request; from a credential it
	// would reach the store unchecked.
	for _, r := range t {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("idem: tenant %q has a non-printable character %U", t, r)
		}
	}
	return nil
}

// checkName accepts a token name that the tokens file reads back as one
// field and that is safe to log: printable UTF-8 without spaces (of any
// kind: strings.Fields splits on every Unicode space), '=' or '#'.
func checkName(name string) error {
	if !utf8.ValidString(name) {
		return fmt.Errorf("idem: token name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || r == '=' || r == '#' {
			return fmt.Errorf("idem: token name %q contains a space, '=' or '#'", name)
		}
		if !unicode.IsPrint(r) {
			return fmt.Errorf("idem: token name %q has a non-printable character %U", name, r)
		}
	}
	return nil
}

type tokenEntry struct {
	id      Identity
	expires time.Time // zero: never
}

// table is one parsed tokens file; it is never modified after parsing, so
// readers share it without locks.
type table struct {
	tokens  map[[sha256.Size]byte]tokenEntry
	certs   map[string]Identity // by URI SAN or CN
	revoked map[[sha256.Size]byte]bool
	// anchors are the client CAs of the same reload (DER), which every
	// call's certificate chain must still end at.
	anchors map[string]bool
}

func emptyTable() *table {
	return &table{tokens: map[[sha256.Size]byte]tokenEntry{}, certs: map[string]Identity{}, revoked: map[[sha256.Size]byte]bool{}}
}

// parseTable reads a tokens file. Any malformed line fails the whole file,
// so a typo never silently drops a revocation or widens access.
func parseTable(data []byte) (*table, error) {
	t := emptyTable()
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := t.parseLine(line); err != nil {
			return nil, fmt.Errorf("idem: tokens file line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("idem: read tokens file: %w", err)
	}
	return t, nil
}

func (t *table) parseLine(line string) error {
	fields := strings.Fields(line)
	sel, rest := fields[0], fields[1:]
	switch {
	case strings.HasPrefix(sel, "revoked-cert:"):
		if len(rest) > 0 {
			return fmt.Errorf("unexpected field after revoked-cert")
		}
		h, err := parseHex(strings.TrimPrefix(sel, "revoked-cert:"))
		if err != nil {
			return err
		}
		t.revoked[h] = true
		return nil
	case strings.HasPrefix(sel, "sha256:"):
		h, err := parseHex(strings.TrimPrefix(sel, "sha256:"))
		if err != nil {
			return err
		}
		if _, dup := t.tokens[h]; dup {
			return fmt.Errorf("token hash listed twice")
		}
		id, attrs, err := parseAttrs(rest, "expires", "name")
		if err != nil {
			return err
		}
		e := tokenEntry{id: id}
		if s, ok := attrs["expires"]; ok {
			if e.expires, err = time.Parse(time.RFC3339, s); err != nil {
				return fmt.Errorf("expires %q is not RFC 3339", s)
			}
		}
		e.id.Subject = "token:" + hex.EncodeToString(h[:])[:12]
		if name := attrs["name"]; name != "" {
			e.id.Subject = "token:" + name
		}
		t.tokens[h] = e
		return nil
	case strings.HasPrefix(sel, "cert:"):
		subj := strings.TrimPrefix(sel, "cert:")
		if subj == "" {
			return fmt.Errorf("empty certificate subject")
		}
		if _, dup := t.certs[subj]; dup {
			return fmt.Errorf("certificate subject %q listed twice", subj)
		}
		id, _, err := parseAttrs(rest)
		if err != nil {
			return err
		}
		id.Subject = subj
		t.certs[subj] = id
		return nil
	}
	// The selector is not shown: an operator who pasted a token instead of
	// its hash would find the secret in idemd's log.
	if strings.HasPrefix(sel, tokenPrefix) {
		return fmt.Errorf("line starts with what looks like a token (%s…), want sha256: and the token's hash, cert: or revoked-cert:", tokenPrefix)
	}
	return fmt.Errorf("line starts with an unknown selector, want sha256:, cert: or revoked-cert:")
}

func parseHex(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	if len(s) != 2*sha256.Size {
		return h, fmt.Errorf("hash has %d hex digits, want %d", len(s), 2*sha256.Size)
	}
	if _, err := hex.Decode(h[:], []byte(strings.ToLower(s))); err != nil {
		return h, fmt.Errorf("hash is not hex")
	}
	return h, nil
}

// parseAttrs reads key=value fields: tenant and role are required, extra
// names the optional ones allowed.
func parseAttrs(fields []string, extra ...string) (Identity, map[string]string, error) {
	attrs := map[string]string{}
	for i, f := range fields {
		// Fields that are not understood are named by position, not shown:
		// a token pasted into the line would otherwise reach the log.
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return Identity{}, nil, fmt.Errorf("field %d after the first is not key=value", i+1)
		}
		if k != "tenant" && k != "role" && !contains(extra, k) {
			return Identity{}, nil, fmt.Errorf("unknown field %d after the first (want tenant, role%s)", i+1, strings.Join(append([]string{""}, extra...), ", "))
		}
		if _, dup := attrs[k]; dup {
			return Identity{}, nil, fmt.Errorf("field %q given twice", k)
		}
		attrs[k] = v
	}
	if err := checkTenant(attrs["tenant"]); err != nil {
		return Identity{}, nil, err
	}
	role, ok := parseRole(attrs["role"])
	if !ok {
		return Identity{}, nil, fmt.Errorf("role %q, want client or admin", attrs["role"])
	}
	return Identity{Tenant: attrs["tenant"], Role: role}, attrs, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
