package policy

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
	"gopkg.in/yaml.v3"
)

// A TOML policy file is read into the yaml.Node tree a YAML file gives,
// so that one validator checks both and reports the same lines:
//
//	[namespaces."payments.*"]
//	store = "postgres://idem@db/idem"
//	max_retention = "7d"
//
// go-toml's unstable parser is used rather than toml.Unmarshal because it
// keeps every key's and value's place in the file. It does not enforce
// TOML's rule that a table or key is defined once, so tomlTree does.

// tomlHow is how a TOML table came to be, which decides whether a later
// header or dotted key may define it again.
type tomlHow uint8

const (
	tomlRoot     tomlHow = iota
	tomlImplicit         // a super-table of a header: [a.b] creates a
	tomlHeader           // [a.b]
	tomlDotted           // a.b.c = 1 creates a and a.b
	tomlInline           // a = {…}: closed once written
)

type tomlTable struct {
	how     tomlHow
	line    int
	entries []*tomlEntry
	byKey   map[string]*tomlEntry
}

// tomlEntry is a key of a table and its value: a table or a scalar,
// sequence or mapping node.
type tomlEntry struct {
	key   string
	line  int // the key's
	table *tomlTable
	value *yaml.Node
}

func newTOMLTable(how tomlHow, line int) *tomlTable {
	return &tomlTable{how: how, line: line, byKey: map[string]*tomlEntry{}}
}

func (t *tomlTable) add(e *tomlEntry) {
	t.entries = append(t.entries, e)
	t.byKey[e.key] = e
}

// tomlReader builds the tree of one TOML file.
type tomlReader struct {
	p      *parser
	tp     unstable.Parser
	data   []byte
	starts []int // the offset of each line's first byte
}

func (r *tomlReader) line(offset int) int {
	// The number of lines starting at or before offset.
	lo, hi := 0, len(r.starts)
	for lo < hi {
		m := (lo + hi) / 2
		if r.starts[m] <= offset {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func (r *tomlReader) nodeLine(n *unstable.Node) int {
	return r.line(int(n.Raw.Offset))
}

// tomlKeyPart is one part of a dotted key.
type tomlKeyPart struct {
	name string
	line int
}

func (r *tomlReader) key(it unstable.Iterator) []tomlKeyPart {
	var parts []tomlKeyPart
	for it.Next() {
		n := it.Node()
		parts = append(parts, tomlKeyPart{name: string(n.Data), line: r.nodeLine(n)})
	}
	return parts
}

// tomlPath writes a key as TOML would: namespaces."payments.*".store.
func tomlPath(parts []tomlKeyPart) string {
	s := make([]string, len(parts))
	for i, k := range parts {
		s[i] = tomlBareOrQuoted(k.name)
	}
	return strings.Join(s, ".")
}

func tomlBareOrQuoted(s string) string {
	if s == "" {
		return `""`
	}
	for _, c := range []byte(s) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return strconv.Quote(s)
		}
	}
	return s
}

// tomlTree returns the top node of a TOML file, or nil after reporting
// why there is none. A repeated table or key is reported and left out,
// and the rest of the file is still checked.
func (p *parser) tomlTree(data []byte) *yaml.Node {
	// A byte order mark may open a TOML file (as a YAML one), and editors
	// such as Notepad write one; go-toml reads it as a key. Dropping it
	// leaves every line where it was.
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	r := &tomlReader{p: p, data: data, starts: []int{0}}
	for i, c := range data {
		if c == '\n' {
			r.starts = append(r.starts, i+1)
		}
	}
	root := newTOMLTable(tomlRoot, 1)
	cur := root
	// prefix is the key of cur, for messages.
	var prefix []tomlKeyPart
	seen := false
	r.tp.Reset(data)
	for r.tp.NextExpression() {
		e := r.tp.Expression()
		seen = true
		switch e.Kind {
		case unstable.Table:
			prefix = r.key(e.Key())
			cur = r.header(root, prefix)
		case unstable.ArrayTable:
			prefix = r.key(e.Key())
			p.addf(prefix[0].line, "[[%s]]: a policy file has no arrays of tables (write [namespaces.\"pattern\"])", tomlPath(prefix))
			cur = newTOMLTable(tomlHeader, prefix[0].line) // dropped
		case unstable.KeyValue:
			r.keyValue(cur, prefix, e)
		}
	}
	if err := r.tp.Error(); err != nil {
		r.syntaxError(err)
		return nil
	}
	if !seen {
		p.addf(0, "is empty (want a [namespaces.\"pattern\"] table)")
		return nil
	}
	return r.yaml(root, nil)
}

// syntaxError reports a TOML syntax error at the line it highlights.
func (r *tomlReader) syntaxError(err error) {
	var perr *unstable.ParserError
	if !errors.As(err, &perr) {
		r.p.addf(0, "not valid TOML: %v", err)
		return
	}
	line := 0
	// The highlight is a slice of the data: its capacity tells where it
	// starts.
	if off := cap(r.data) - cap(perr.Highlight); cap(perr.Highlight) > 0 && off >= 0 && off <= len(r.data) {
		line = r.line(off)
	}
	r.p.addf(line, "not valid TOML: %s", strings.ReplaceAll(perr.Message, "\n", " "))
}

// header finds or creates the table of a [header] and returns it; a
// table defined before is reported and a table no one sees is returned.
func (r *tomlReader) header(root *tomlTable, key []tomlKeyPart) *tomlTable {
	line := key[0].line
	t := root
	for i, k := range key {
		last := i == len(key)-1
		e := t.byKey[k.name]
		if e == nil {
			how := tomlImplicit
			if last {
				how = tomlHeader
			}
			e = &tomlEntry{key: k.name, line: k.line, table: newTOMLTable(how, line)}
			t.add(e)
			t = e.table
			continue
		}
		switch {
		case e.table == nil || e.table.how == tomlInline:
			if last {
				r.p.addf(line, "table [%s] repeats line %d", tomlPath(key), e.line)
			} else {
				r.p.addf(line, "table [%s] repeats line %d (%s is defined there)", tomlPath(key), e.line, tomlPath(key[:i+1]))
			}
			return newTOMLTable(tomlHeader, line)
		case last && e.table.how != tomlImplicit:
			r.p.addf(line, "table [%s] repeats line %d", tomlPath(key), e.table.line)
			return newTOMLTable(tomlHeader, line)
		case last:
			e.table.how, e.table.line = tomlHeader, line
		}
		t = e.table
	}
	return t
}

// keyValue adds "a.b.c = value" to the table t, whose key is prefix.
func (r *tomlReader) keyValue(t *tomlTable, prefix []tomlKeyPart, kv *unstable.Node) {
	key := r.key(kv.Key())
	full := append(append([]tomlKeyPart(nil), prefix...), key...)
	for i, k := range key[:len(key)-1] {
		e := t.byKey[k.name]
		if e == nil {
			e = &tomlEntry{key: k.name, line: k.line, table: newTOMLTable(tomlDotted, k.line)}
			t.add(e)
		} else if e.table == nil || e.table.how != tomlDotted {
			// A table of a header, or above one, is not added to with
			// dotted keys, nor an inline table or a value.
			r.p.addf(k.line, "key %s repeats line %d", tomlPath(full[:len(prefix)+i+1]), e.line)
			return
		}
		t = e.table
	}
	k := key[len(key)-1]
	if e := t.byKey[k.name]; e != nil {
		r.p.addf(k.line, "key %s repeats line %d", tomlPath(full), e.line)
		return
	}
	e := &tomlEntry{key: k.name, line: k.line}
	v := kv.Value()
	if v.Kind == unstable.InlineTable {
		e.table = newTOMLTable(tomlInline, r.nodeLine(v))
		it := v.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				r.keyValue(e.table, full, c)
			}
		}
	} else {
		e.value = r.value(v, k.line)
	}
	t.add(e)
}

// value turns a TOML value into the node YAML would give: strings as
// their value, other scalars as their text (integers in decimal), arrays
// as a sequence the validator refuses where one value belongs.
func (r *tomlReader) value(v *unstable.Node, keyLine int) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Line: keyLine, Value: string(v.Data)}
	if v.Raw.Length > 0 {
		n.Line = r.nodeLine(v)
	}
	switch v.Kind {
	case unstable.String:
		n.Tag = "!!str"
	case unstable.Bool:
		n.Tag = "!!bool"
	case unstable.Integer:
		// 1_048_576 and 0x100000 are TOML's ways to write 1048576.
		n.Tag = "!!int"
		// The parser refuses leading zeros, which ParseInt would read as
		// octal.
		if i, err := strconv.ParseInt(n.Value, 0, 64); err == nil {
			n.Value = strconv.FormatInt(i, 10)
		}
	case unstable.Float:
		n.Tag = "!!float"
	case unstable.Array:
		n.Kind, n.Tag, n.Value = yaml.SequenceNode, "!!seq", ""
	default: // dates and times: no duration, URL or number
		n.Tag = "!!timestamp"
	}
	return n
}

// yaml turns a table into a mapping node. A table under a pattern's table
// ([namespaces.payments.v1], or a dotted key there) is refused: it is
// almost always a pattern with dots written without quotes.
func (r *tomlReader) yaml(t *tomlTable, path []tomlKeyPart) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: t.line}
	for _, e := range t.entries {
		key := append(append([]tomlKeyPart(nil), path...), tomlKeyPart{name: e.key, line: e.line})
		var v *yaml.Node
		switch {
		case e.table == nil:
			v = e.value
		case len(path) == 2 && path[0].name == "namespaces" && e.table.how != tomlInline:
			pattern := path[1].name + "." + e.key
			r.p.addf(e.line, "%s is a table under pattern %q; a pattern with dots takes quotes: [namespaces.%s]", tomlPath(key), path[1].name, strconv.Quote(pattern))
			continue
		default:
			v = r.yaml(e.table, key)
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: e.key, Line: e.line}, v)
	}
	return m
}
