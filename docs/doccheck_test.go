// Package docs holds the project's documentation; its test checks that the
// code blocks of README.md and docs/ still match the code.
package docs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jetagent/jetagent/internal/agentcli"
	"github.com/jetagent/jetagent/internal/replaycli"
	"github.com/spf13/cobra"
)

// block is one fenced code block.
type block struct {
	file, lang string
	line       int // of the opening fence
	text       string
}

// markdown files whose blocks are checked.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"../README.md", "../examples/README.md", "../examples/sidecar/README.md", "../integration/README.md"}
	more, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append(files, more...)
}

func blocks(t *testing.T, file string) []block {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []block
	var cur *block
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			if cur == nil {
				cur = &block{file: file, lang: strings.TrimPrefix(strings.TrimSpace(line), "```"), line: n}
			} else {
				out = append(out, *cur)
				cur = nil
			}
			continue
		}
		if cur != nil {
			cur.text += line + "\n"
		}
	}
	return out
}

// TestCodeBlocksMatchTheCode checks every fenced block: shell commands of
// agent, replay, make and go run must parse against the real command trees
// and files; Go blocks must be the body of the function their first line
// names (or be checked by the test listed below); PromQL may only use
// metrics the metrics package defines. Blocks without a language are
// diagrams and tables.
func TestCodeBlocksMatchTheCode(t *testing.T) {
	// Blocks checked by tests of their own.
	checkedElsewhere := map[string]string{
		"security.md:go":        "integration/permissions_test.go: TestSecurityDocShowsTheTestedPermissions",
		"security.md:conf":      "integration/permissions_test.go",
		"configuration.md:yaml": "internal/agentcli/configdoc_test.go",
	}
	seen := 0
	for _, file := range markdownFiles(t) {
		for _, b := range blocks(t, file) {
			seen++
			where := fmt.Sprintf("%s:%d", b.file, b.line)
			switch b.lang {
			case "", "text":
			case "sh":
				for _, cmd := range shellCommands(b.text) {
					if err := checkCommand(cmd); err != nil {
						t.Errorf("%s: %q: %v", where, strings.Join(cmd, " "), err)
					}
				}
			case "go":
				if err := checkGo(b.text); err != nil {
					if checkedElsewhere[filepath.Base(b.file)+":go"] == "" {
						t.Errorf("%s: %v", where, err)
					}
				}
			case "promql":
				for _, name := range regexp.MustCompile(`jetagent_[a-z_]+`).FindAllString(b.text, -1) {
					if !metricDefined(t, name) {
						t.Errorf("%s: metric %s is not defined in metrics/", where, name)
					}
				}
			default:
				if checkedElsewhere[filepath.Base(b.file)+":"+b.lang] == "" {
					t.Errorf("%s: a %q block that no test checks", where, b.lang)
				}
			}
		}
	}
	if seen < 10 {
		t.Fatalf("only %d code blocks found: is the parser broken?", seen)
	}
}

// shellCommands splits a shell block into commands (words), joining
// continuation lines, dropping comments and leading VAR=value words.
func shellCommands(text string) [][]string {
	var cmds [][]string
	var pending string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasSuffix(line, "\\") {
			pending += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line = pending + line
		pending = ""
		words := splitWords(line)
		for i, w := range words {
			if w == "|" { // a pipe: the command is what comes before it
				words = words[:i]
				break
			}
		}
		for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-") {
			words = words[1:]
		}
		if len(words) > 0 {
			cmds = append(cmds, words)
		}
	}
	return cmds
}

// splitWords is a small shell tokenizer: quotes, and # comments outside
// them.
func splitWords(line string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == '#' && !inWord:
			return words
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func checkCommand(words []string) error {
	switch {
	case len(words) >= 3 && words[0] == "go" && words[1] == "run" && words[2] == "./cmd/agent":
		return parses(agentcli.NewCommand(io.Discard, io.Discard), words[3:])
	case words[0] == "agent":
		return parses(agentcli.NewCommand(io.Discard, io.Discard), words[1:])
	case len(words) >= 3 && words[0] == "go" && words[1] == "run" && words[2] == "./cmd/replay":
		return parses(replaycli.NewCommand(replaycli.IO{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}), words[3:])
	case words[0] == "replay":
		return parses(replaycli.NewCommand(replaycli.IO{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}), words[1:])
	case len(words) >= 4 && words[0] == "docker-compose" && words[1] == "run" && words[3] == "replay":
		return parses(replaycli.NewCommand(replaycli.IO{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}), words[4:])
	case len(words) >= 3 && words[0] == "go" && words[1] == "run" && strings.HasPrefix(words[2], "./"):
		if _, err := os.Stat(filepath.Join("..", words[2])); err != nil {
			return fmt.Errorf("no package %s", words[2])
		}
	case words[0] == "make":
		makefile, err := os.ReadFile("../Makefile")
		if err != nil {
			return err
		}
		for _, target := range words[1:] {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(target) + `:`).Match(makefile) {
				return fmt.Errorf("no make target %q", target)
			}
		}
	}
	return nil // docker-compose, for loops and the like: not ours to check
}

// parses checks that args name a command of root and that its flags and
// arguments are accepted, without running it.
func parses(root *cobra.Command, args []string) error {
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return err
	}
	if cmd.Args != nil {
		if err := cmd.Args(cmd, cmd.Flags().Args()); err != nil {
			return err
		}
	}
	if !cmd.Runnable() {
		return fmt.Errorf("%q is not a command that runs", cmd.CommandPath())
	}
	return nil
}

var fromLine = regexp.MustCompile(`^// from (\S+\.go) (\w+)$`)

// checkGo requires a Go block to start with "// from FILE FUNC" and to be
// that function's body, so that it compiles and stays current.
func checkGo(text string) error {
	first, body, _ := strings.Cut(text, "\n")
	m := fromLine.FindStringSubmatch(strings.TrimSpace(first))
	if m == nil {
		return errors.New(`a go block must start with "// from path/file.go FuncName"`)
	}
	src, err := os.ReadFile(filepath.Join("..", m[1]))
	if err != nil {
		return err
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, m[1], src, parser.ParseComments)
	if err != nil {
		return err
	}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != m[2] {
			continue
		}
		inner := src[fset.Position(fn.Body.Lbrace).Offset+1 : fset.Position(fn.Body.Rbrace).Offset]
		if normalize(string(inner)) != normalize(body) {
			return fmt.Errorf("the block differs from the body of %s in %s", m[2], m[1])
		}
		return nil
	}
	return fmt.Errorf("no func %s in %s", m[2], m[1])
}

func normalize(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func metricDefined(t *testing.T, name string) bool {
	t.Helper()
	files, err := filepath.Glob("../metrics/*.go")
	if err != nil {
		t.Fatal(err)
	}
	base := strings.TrimPrefix(name, "jetagent_")
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		base = strings.TrimSuffix(base, suffix)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(`"`+base+`"`)) || bytes.Contains(data, []byte(`"jetagent_`+base+`"`)) {
			return true
		}
	}
	return false
}
