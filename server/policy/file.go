package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
)

// Kind is how a pattern matches namespaces.
type Kind uint8

const (
	// Exact matches one namespace.
	Exact Kind = iota + 1
	// Prefix matches namespaces starting with the pattern before its '*'.
	Prefix
	// Default matches namespaces no other pattern matches.
	Default
)

// Rule is one pattern of a policy file.
type Rule struct {
	// Pattern is the pattern as written.
	Pattern string
	Kind    Kind
	// Match is the namespace (Exact) or the prefix (Prefix).
	Match string
	// Store is the store URL; empty means the server's own store.
	Store  string
	Policy server.Policy
	// Line is the pattern's line in the file.
	Line int
}

// File is a parsed, validated policy file.
type File struct {
	Path  string
	Rules []Rule
}

// Problem is one thing wrong in a policy file.
type Problem struct {
	Line int
	Msg  string
}

// FileError lists everything wrong in a policy file, in line order.
type FileError struct {
	Path     string
	Problems []Problem
}

func (e *FileError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		if p.Line > 0 {
			parts[i] = fmt.Sprintf("%s:%d: %s", e.Path, p.Line, p.Msg)
		} else {
			parts[i] = fmt.Sprintf("%s: %s", e.Path, p.Msg)
		}
	}
	return "idem: policy file " + strings.Join(parts, "; ")
}

// maxFileBytes bounds a policy file: a path given by mistake (a log, a
// device such as /dev/zero) must fail, not fill idemd's memory.
const maxFileBytes = 1 << 20

// ReadFile reads and parses the policy file at path; see Parse.
func ReadFile(path string, limits server.Limits) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("idem: policy file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("idem: policy file: %w", err)
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("idem: policy file %s is over %d bytes (1 MiB): not a policy file?", path, maxFileBytes)
	}
	return Parse(path, data, limits)
}

// policy keys, in the order the docs list them.
var keys = []string{"store", "default_lease", "max_lease", "default_retention", "max_retention", "store_results", "max_result_bytes"}

// Parse parses a policy file's contents and checks it against the server's
// limits (defaults filled in). It does not open the stores. Every problem
// is reported, each with its line, in one *FileError.
func Parse(path string, data []byte, limits server.Limits) (*File, error) {
	p := &parser{path: path, limits: limits}
	f := p.parse(data)
	if len(p.problems) > 0 {
		sort.SliceStable(p.problems, func(i, j int) bool { return p.problems[i].Line < p.problems[j].Line })
		return nil, &FileError{Path: path, Problems: p.problems}
	}
	return f, nil
}

type parser struct {
	path     string
	limits   server.Limits
	problems []Problem
}

func (p *parser) addf(line int, format string, args ...any) {
	p.problems = append(p.problems, Problem{Line: line, Msg: fmt.Sprintf(format, args...)})
}

// deref follows an alias to the value it names. The value is returned at
// the alias's place, so that what is wrong with it under this key is
// reported at this key's line, not at the anchor's, under another pattern.
func deref(n *yaml.Node) *yaml.Node {
	if n == nil || n.Kind != yaml.AliasNode {
		return n
	}
	line, col := n.Line, n.Column
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil {
		return nil
	}
	c := *n
	c.Line, c.Column = line, col
	return &c
}

// isMerge reports a YAML merge key ("<<: *base"), which yaml.v3 leaves
// to whoever reads a node tree: read as a key it would be a pattern or a
// policy key named "<<".
func (p *parser) isMerge(k *yaml.Node, pattern string) bool {
	if k.Kind != yaml.ScalarNode || k.Tag != "!!merge" {
		return false
	}
	prefix := ""
	if pattern != "" {
		prefix = strconv.Quote(pattern) + ": "
	}
	p.addf(k.Line, "%smerge keys (<<) are not supported; write each key out", prefix)
	return true
}

// yamlError reports a YAML syntax error. yaml.v3's messages start
// "yaml: line N: …"; keep the line.
func (p *parser) yamlError(err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, tail
			}
		}
	}
	p.addf(line, "not valid YAML: %s", msg)
}

// isTOML reports whether the policy file at path is read as TOML; any
// other file is read as YAML, as before TOML was accepted.
func isTOML(path string) bool {
	return strings.EqualFold(filepath.Ext(path), ".toml")
}

// parse reads the file into a yaml.Node tree, from YAML or TOML, and
// validates that tree: one validator for both syntaxes.
func (p *parser) parse(data []byte) *File {
	var top *yaml.Node
	if isTOML(p.path) {
		top = p.tomlTree(data)
	} else {
		top = p.yamlTree(data)
	}
	if top == nil {
		return nil
	}
	return p.validate(top)
}

// yamlTree returns the top node of a YAML file, or nil after reporting
// why there is none.
func (p *parser) yamlTree(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		p.yamlError(err)
		return nil
	}
	if len(doc.Content) == 0 {
		p.addf(0, "is empty (want a \"namespaces\" mapping)")
		return nil
	}
	// yaml.Unmarshal would read the first document alone, and the
	// patterns of any after a "---" would quietly route to default.
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		p.yamlError(err)
		return nil
	case len(next.Content) > 0:
		p.addf(next.Content[0].Line, "a second YAML document; put every pattern under the first one's \"namespaces\"")
		return nil
	}
	return deref(doc.Content[0])
}

func (p *parser) validate(top *yaml.Node) *File {
	f := &File{Path: p.path}
	if top.Kind != yaml.MappingNode {
		p.addf(top.Line, "top level must be a mapping with key \"namespaces\"")
		return nil
	}
	var nss *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], deref(top.Content[i+1])
		if p.isMerge(k, "") {
			continue
		}
		switch k.Value {
		case "namespaces":
			if nss != nil {
				p.addf(k.Line, "key \"namespaces\" repeats line %d", nss.Line)
				continue
			}
			nss = v
		default:
			p.addf(k.Line, "unknown key %q (have namespaces)", k.Value)
		}
	}
	if nss == nil {
		p.addf(top.Line, "has no \"namespaces\" mapping")
		return nil
	}
	if nss.Kind != yaml.MappingNode {
		p.addf(nss.Line, "\"namespaces\" must map patterns to policies")
		return nil
	}
	seen := map[string]Rule{}
	for i := 0; i+1 < len(nss.Content); i += 2 {
		k, v := nss.Content[i], deref(nss.Content[i+1])
		if p.isMerge(k, "") {
			continue
		}
		r, ok := p.pattern(k)
		if !ok {
			continue
		}
		norm := fmt.Sprintf("%d:%s", r.Kind, r.Match)
		if prev, dup := seen[norm]; dup {
			p.addf(k.Line, "pattern %q overlaps pattern %q of line %d (both match the same namespaces)", r.Pattern, prev.Pattern, prev.Line)
			continue
		}
		seen[norm] = r
		if p.policy(&r, v) {
			f.Rules = append(f.Rules, r)
		}
	}
	return f
}

// pattern parses a pattern. "payments.*" and "payments.**" are the same
// prefix, and "*" is the same as default, so both pairs count as overlaps.
func (p *parser) pattern(k *yaml.Node) (Rule, bool) {
	r := Rule{Pattern: k.Value, Line: k.Line}
	if k.Kind != yaml.ScalarNode {
		p.addf(k.Line, "a pattern must be a string")
		return r, false
	}
	s := strings.TrimSpace(k.Value)
	switch {
	case s == "":
		p.addf(k.Line, "empty pattern (use \"default\" for every other namespace)")
		return r, false
	case s == "default":
		r.Kind = Default
	case strings.HasSuffix(s, "*"):
		r.Kind, r.Match = Prefix, strings.TrimRight(s, "*")
		if r.Match == "" {
			r.Kind = Default
		}
	default:
		r.Kind, r.Match = Exact, s
	}
	if strings.Contains(r.Match, "*") {
		p.addf(k.Line, "pattern %q: '*' may only end a pattern", k.Value)
		return r, false
	}
	// idem refuses such a namespace, so such a pattern would route none,
	// and the namespaces it was written for would go to default unnoticed
	// (a zero-width space pasted from a chat looks like nothing at all).
	if why := server.NamespaceProblem(r.Match, p.limits.MaxNamespaceBytes); why != "" {
		p.addf(k.Line, "pattern %q %s, so no namespace can match it", k.Value, why)
		return r, false
	}
	return r, true
}

func (p *parser) policy(r *Rule, v *yaml.Node) bool {
	r.Policy.StoreResults = true
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return true // "pattern:" alone: the server's store and limits
	}
	if v.Kind != yaml.MappingNode {
		p.addf(v.Line, "policy of %q must be a mapping", r.Pattern)
		return false
	}
	n := len(p.problems)
	lim := p.limits
	set := map[string]int{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], deref(v.Content[i+1])
		if p.isMerge(k, r.Pattern) {
			continue
		}
		if l, dup := set[k.Value]; dup {
			p.addf(k.Line, "%q: key %s repeats line %d", r.Pattern, k.Value, l)
			continue
		}
		set[k.Value] = k.Line
		if val.Kind != yaml.ScalarNode {
			p.addf(val.Line, "%q: %s must be a single value", r.Pattern, k.Value)
			continue
		}
		switch k.Value {
		case "store":
			r.Store = strings.TrimSpace(val.Value)
			if _, err := url.Parse(r.Store); err != nil || r.Store == "" {
				p.addf(val.Line, "%q: store is not a URL: %s", r.Pattern, storage.Redacted(r.Store))
			}
		case "default_lease":
			r.Policy.DefaultLease = p.duration(r, k.Value, val, lim.MinLease, lim.MaxLease, "--max-lease")
		case "max_lease":
			r.Policy.MaxLease = p.duration(r, k.Value, val, lim.MinLease, lim.MaxLease, "--max-lease")
		case "default_retention":
			r.Policy.DefaultRetention = p.duration(r, k.Value, val, lim.MinRetention, lim.MaxRetention, "--max-retention")
		case "max_retention":
			r.Policy.MaxRetention = p.duration(r, k.Value, val, lim.MinRetention, lim.MaxRetention, "--max-retention")
		case "store_results":
			b, err := strconv.ParseBool(val.Value)
			if err != nil {
				p.addf(val.Line, "%q: store_results is %q, want true or false", r.Pattern, val.Value)
			}
			r.Policy.StoreResults = b
		case "max_result_bytes":
			b, err := strconv.Atoi(val.Value)
			switch {
			case err != nil || b <= 0:
				p.addf(val.Line, "%q: max_result_bytes is %q, want a positive number of bytes", r.Pattern, val.Value)
			case b > lim.MaxResultBytes:
				p.addf(val.Line, "%q: max_result_bytes %d is above the server's --max-result-bytes %d", r.Pattern, b, lim.MaxResultBytes)
			}
			r.Policy.MaxResultSize = b
		default:
			p.addf(k.Line, "%q: unknown key %q (have %s)", r.Pattern, k.Value, strings.Join(keys, ", "))
		}
	}
	if len(p.problems) > n {
		return false
	}
	// A default is checked against the maximum it will be served with: the
	// policy's own, or the server's.
	check := func(defKey, maxKey string, def, max, serverMax time.Duration) {
		if def == 0 {
			return
		}
		if max == 0 {
			max = serverMax
			maxKey = "the server's " + maxKey
		}
		if def > max {
			p.addf(set[defKey], "%q: %s %v is above %s %v", r.Pattern, defKey, def, maxKey, max)
		}
	}
	check("default_lease", "max_lease", r.Policy.DefaultLease, r.Policy.MaxLease, lim.MaxLease)
	check("default_retention", "max_retention", r.Policy.DefaultRetention, r.Policy.MaxRetention, lim.MaxRetention)
	return len(p.problems) == n
}

// duration parses a Go duration or a whole number of days ("7d") and
// checks it against the server's range.
func (p *parser) duration(r *Rule, key string, v *yaml.Node, lo, hi time.Duration, hiFlag string) time.Duration {
	s := strings.TrimSpace(v.Value)
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if n, err = strconv.Atoi(days); err == nil {
			if n < 0 || int64(n) > math.MaxInt64/int64(24*time.Hour) {
				err = strconv.ErrRange // would wrap around
			} else {
				d = time.Duration(n) * 24 * time.Hour
			}
		}
	} else {
		d, err = time.ParseDuration(s)
	}
	switch {
	case err != nil:
		p.addf(v.Line, "%q: %s is %q, not a duration (e.g. 30s, 10m, 24h, 7d)", r.Pattern, key, v.Value)
	case d < lo:
		p.addf(v.Line, "%q: %s %v is below the server's minimum %v", r.Pattern, key, d, lo)
	case d > hi:
		p.addf(v.Line, "%q: %s %v is above the server's %s %v", r.Pattern, key, d, hiFlag, hi)
	default:
		return d
	}
	return 0
}
