package agentcli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// origin says where a value or a problem comes from: a position in the
// config file, an environment variable, a flag, or nothing (a default).
type origin struct {
	file      string
	line, col int // 0: unknown
	env       string
	flag      string
}

func (o origin) String() string {
	switch {
	case o.flag != "":
		return "--" + o.flag
	case o.env != "":
		return "$" + o.env
	case o.file != "" && o.col > 0:
		return fmt.Sprintf("%s:%d:%d", o.file, o.line, o.col)
	case o.file != "" && o.line > 0:
		return fmt.Sprintf("%s:%d", o.file, o.line)
	default:
		return o.file
	}
}

// problem is one thing wrong with the configuration.
type problem struct {
	at   origin
	path string // e.g. "agents[1].ack_wait"; "" when at says it all
	msg  string
}

func (p problem) String() string {
	var b strings.Builder
	if at := p.at.String(); at != "" {
		b.WriteString(at + ": ")
	}
	if p.path != "" && p.at.flag == "" && p.at.env == "" {
		b.WriteString(p.path + ": ")
	}
	b.WriteString(p.msg)
	return b.String()
}

// sortProblems orders problems by file position; flags and variables last.
func sortProblems(ps []problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i].at, ps[j].at
		if (a.file == "") != (b.file == "") {
			return a.file != ""
		}
		if a.line != b.line {
			return a.line < b.line
		}
		return a.col < b.col
	})
}

// entry is a value with its origin. A bad entry stands for a value that
// was given but refused (reported already): the setting counts as set,
// its default applies.
type entry struct {
	v   any
	at  origin
	bad bool
}

// values holds the values set for one scope, by setting key; a key not
// present takes the setting's default.
type values map[string]entry

// agentDecl is one agent as declared.
type agentDecl struct {
	vals  values
	rules []ruleDecl
	at    origin // the agent's mapping in the file
	path  string // "agents[i]"
}

type ruleDecl struct {
	vals values
	at   origin
	path string
}

// configDoc is the configuration before resolution: what the file said,
// then what the environment and the flags changed.
type configDoc struct {
	file   string // "" without a file
	dir    string // the file's directory (for relative paths)
	global values
	agents []*agentDecl
}

// configSources are where loadConfig reads settings.
type configSources struct {
	file  string                      // YAML file; "": one agent from defaults
	env   func(string) (string, bool) // nil: no environment
	flags *pflag.FlagSet              // nil: no flags
	// natsContext names a nats CLI context (--context): its URL applies
	// when nothing else sets nats.url.
	natsContext string
}

// loadConfig reads the file, applies the environment and the flags over
// it, and resolves the result. It returns every problem found.
func loadConfig(src configSources) (*runConfig, []problem) {
	var doc *configDoc
	var probs []problem
	if src.file != "" {
		doc, probs = readConfigFile(src.file)
	} else {
		doc = &configDoc{global: values{}, agents: []*agentDecl{{vals: values{}, path: "agent"}}}
	}
	if doc == nil {
		return nil, probs
	}
	probs = append(probs, doc.override(src.env, src.flags)...)
	cfg, more := doc.resolve(src.env != nil || src.flags != nil)
	probs = append(probs, more...)
	sortProblems(probs)
	if len(probs) > 0 {
		return nil, probs
	}
	return cfg, nil
}

// readConfigFile parses a YAML config file. A nil doc means it could not
// be read or parsed at all.
func readConfigFile(file string) (*configDoc, []problem) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, []problem{{at: origin{file: file}, msg: "cannot read: " + strings.TrimPrefix(err.Error(), "open "+file+": ")}}
	}
	doc, probs := parseConfig(file, data)
	if doc != nil {
		if abs, err := filepath.Abs(file); err == nil {
			doc.dir = filepath.Dir(abs)
		}
	}
	return doc, probs
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// parseConfig parses the YAML text of a config file named file.
func parseConfig(file string, data []byte) (*configDoc, []problem) {
	w := &walker{file: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		at, msg := yamlErrorAt(file, data, err)
		return nil, []problem{{at: at, msg: "invalid YAML: " + msg}}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		w.errorf(&extra, "", "a second YAML document: a config file holds one")
	}
	doc := &configDoc{file: file, global: values{}}
	if root.Kind == 0 || len(root.Content) == 0 { // empty file
		w.probs = append(w.probs, problem{at: origin{file: file, line: 1, col: 1}, msg: "no agents declared (the file is empty)"})
		return doc, w.probs
	}
	top := resolveAlias(root.Content[0])
	if top.Kind != yaml.MappingNode {
		w.errorf(top, "", "the file must be a mapping with an agents: list")
		return doc, w.probs
	}
	sawAgents := false
	w.section(top, scopeGlobal, "", "", doc.global, func(key string, k, v *yaml.Node) bool {
		if key != "agents" {
			return false
		}
		sawAgents = true
		doc.agents = w.agents(k, v)
		return true
	})
	if !sawAgents {
		w.errorf(top, "", "no agents: list: declare at least one agent")
	}
	return doc, w.probs
}

// parserProblems are the YAML parser's (not scanner's) messages: go.yaml.in
// reports their line counted from 0, one line early.
var parserProblems = []string{
	"did not find expected <stream-start>", "did not find expected <document start>", "did not find expected node content",
	"did not find expected '-' indicator", "did not find expected key", "did not find expected ',' or ']'",
	"did not find expected ',' or '}'", "found undefined tag handle", "found duplicate %YAML directive",
	"found incompatible YAML document", "found duplicate %TAG directive",
}

// yamlErrorAt locates a YAML syntax error: the line go.yaml.in reports,
// corrected where it is known to be off (parser errors count from 0;
// scanner errors name the line where the token began, so a tab that
// breaks the indentation of a later line is found and pointed at).
func yamlErrorAt(file string, data []byte, err error) (origin, string) {
	at := origin{file: file}
	msg := err.Error()
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return at, strings.TrimPrefix(msg, "yaml: ")
	}
	at.line, _ = strconv.Atoi(m[1])
	msg = msg[len(m[0]):]
	switch {
	case slices.Contains(parserProblems, msg):
		at.line++
	case strings.Contains(msg, "tab character"):
		lines := strings.Split(string(data), "\n")
		for i := at.line - 1; i >= 0 && i < len(lines); i++ {
			indent := lines[i][:len(lines[i])-len(strings.TrimLeft(lines[i], " \t"))]
			if col := strings.IndexByte(indent, '\t'); col >= 0 {
				at.line, at.col = i+1, col+1
				msg += " (indent with spaces)"
				break
			}
		}
	}
	return at, msg
}

// walker walks a YAML tree, collecting problems.
type walker struct {
	file  string
	probs []problem
}

func (w *walker) at(n *yaml.Node) origin {
	return origin{file: w.file, line: n.Line, col: n.Column}
}

func (w *walker) errorf(n *yaml.Node, path, format string, args ...any) {
	w.probs = append(w.probs, problem{at: w.at(n), path: path, msg: fmt.Sprintf(format, args...)})
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// pairs calls fn for each key of mapping n, reporting keys that are not
// scalars and keys given twice.
func (w *walker) pairs(n *yaml.Node, path string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			w.errorf(k, path, "keys must be plain words")
			continue
		}
		if line, dup := seen[k.Value]; dup {
			w.errorf(k, joinPath(path, k.Value), "given twice (first on line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		fn(k.Value, k, v)
	}
}

// section reads the settings of scope sc found in mapping n below prefix
// (a dotted key prefix such as "backoff."). special handles the keys that
// are not settings (agents, breaker.rules) and reports whether it did.
func (w *walker) section(n *yaml.Node, sc scope, prefix, path string, vals values, special func(key string, k, v *yaml.Node) bool) {
	w.pairs(n, path, func(key string, k, v *yaml.Node) {
		full := prefix + key
		p := joinPath(path, key)
		switch {
		case special != nil && special(full, k, v):
		case lookupSetting(sc, full) != nil:
			val, ok := w.value(lookupSetting(sc, full), v, p)
			vals[full] = entry{v: val, at: w.at(v), bad: !ok}
		case isSection(sc, full):
			if v.Kind != yaml.MappingNode {
				w.errorf(v, p, "want a mapping of %s", strings.Join(keysAt(sc, full+"."), ", "))
				return
			}
			w.section(v, sc, full+".", p, vals, special)
		default:
			known := keysAt(sc, prefix)
			if sc == scopeGlobal && prefix == "" {
				known = append(known, "agents")
			}
			if sc == scopeAgent && prefix == "breaker." {
				known = append(known, "rules")
			}
			w.errorf(k, p, "unknown key%s", suggest(key, known))
		}
	})
}

// value reads node v as the value of setting s and checks it.
func (w *walker) value(s *setting, v *yaml.Node, path string) (any, bool) {
	var val any
	var err error
	switch {
	case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
		err = errors.New("missing value")
	case s.kind == kindList || s.kind == kindCommand:
		val, err = w.list(s, v)
	case s.kind == kindMap:
		val, err = w.stringMap(v, path)
	case v.Kind != yaml.ScalarNode:
		err = fmt.Errorf("want a single value, not a %s", kindName(v))
	default:
		val, err = parseText(s.kind, v.Value)
	}
	if err == nil && s.check != nil {
		err = s.check(val)
	}
	if err != nil {
		w.errorf(v, path, "%v", err)
		return nil, false
	}
	return val, true
}

func (w *walker) list(s *setting, v *yaml.Node) (any, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		return parseText(s.kind, v.Value)
	case yaml.SequenceNode:
		out := make([]string, 0, len(v.Content))
		for _, item := range v.Content {
			item = resolveAlias(item)
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return nil, fmt.Errorf("item %d: want a string", len(out)+1)
			}
			out = append(out, item.Value)
		}
		return out, nil
	}
	return nil, fmt.Errorf("want a list, not a %s", kindName(v))
}

func (w *walker) stringMap(v *yaml.Node, path string) (any, error) {
	if v.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("want a mapping of NAME: value, not a %s", kindName(v))
	}
	out := map[string]string{}
	var bad error
	w.pairs(v, path, func(key string, _, val *yaml.Node) {
		if val.Kind != yaml.ScalarNode {
			bad = fmt.Errorf("%s: want a single value, not a %s", key, kindName(val))
			return
		}
		out[key] = val.Value
	})
	return out, bad
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "value"
	}
}

// agents reads the agents: list.
func (w *walker) agents(k, v *yaml.Node) []*agentDecl {
	if v.Kind != yaml.SequenceNode {
		w.errorf(v, "agents", "want a list of agents (- name: ...)")
		return nil
	}
	if len(v.Content) == 0 {
		w.errorf(k, "agents", "no agents declared")
		return nil
	}
	var out []*agentDecl
	for i, n := range v.Content {
		n = resolveAlias(n)
		a := &agentDecl{vals: values{}, at: w.at(n), path: fmt.Sprintf("agents[%d]", i)}
		out = append(out, a)
		if n.Kind != yaml.MappingNode {
			w.errorf(n, a.path, "want a mapping (name: ..., handler: ...)")
			continue
		}
		w.section(n, scopeAgent, "", a.path, a.vals, func(key string, k, v *yaml.Node) bool {
			if key != "breaker.rules" {
				return false
			}
			a.rules = w.rules(v, joinPath(a.path, "breaker.rules"))
			return true
		})
		w.checkHandlerKeys(a)
	}
	return out
}

// checkHandlerKeys reports (and drops) handler settings that belong to
// another kind than the agent's.
func (w *walker) checkHandlerKeys(a *agentDecl) {
	kind := handlerEcho
	if e, ok := a.vals["handler.kind"]; ok {
		if e.bad {
			return // reported; which settings belong is unknown
		}
		kind = e.v.(string)
	}
	for key, e := range a.vals {
		s := lookupSetting(scopeAgent, key)
		if s.handler != "" && s.handler != kind {
			w.probs = append(w.probs, problem{at: e.at, path: joinPath(a.path, key),
				msg: fmt.Sprintf("a setting of handler kind %s, but this agent's kind is %s", s.handler, kind)})
			delete(a.vals, key)
		}
	}
}

func (w *walker) rules(v *yaml.Node, path string) []ruleDecl {
	if v.Kind != yaml.SequenceNode {
		w.errorf(v, path, "want a list of rules (- pattern: ...)")
		return nil
	}
	var out []ruleDecl
	for i, n := range v.Content {
		n = resolveAlias(n)
		r := ruleDecl{vals: values{}, at: w.at(n), path: fmt.Sprintf("%s[%d]", path, i)}
		if n.Kind != yaml.MappingNode {
			w.errorf(n, r.path, "want a mapping (pattern: ..., threshold: ..., open_timeout: ...)")
			continue
		}
		w.section(n, scopeRule, "", r.path, r.vals, nil)
		if _, ok := r.vals["pattern"]; !ok {
			w.errorf(n, r.path, "pattern is required")
		}
		out = append(out, r)
	}
	return out
}

// suggest returns a "did you mean" hint for an unknown key.
func suggest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	sort.Strings(known)
	return fmt.Sprintf(" (known here: %s)", strings.Join(known, ", "))
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
