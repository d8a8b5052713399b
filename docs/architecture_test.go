package docs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// importRow is one row of the table "Packages and the direction of imports"
// in architecture.md.
type importRow struct {
	line     int
	name     string   // the package cell, as written
	patterns []string // its packages: "bus" is that package, "examples/..." it and those below
	imports  []string // packages of ours it may import; nil and anyAll for "everything"
	anyAll   bool
}

// match reports how closely the row names pkg (a path relative to the
// module): 0 not at all, else the length of the pattern that matches, one
// more for a pattern naming pkg itself than for a "/..." covering it.
func (r importRow) match(pkg string) int {
	best := 0
	for _, p := range r.patterns {
		if base, ok := strings.CutSuffix(p, "/..."); ok {
			if pkg == base || strings.HasPrefix(pkg, base+"/") {
				best = max(best, 2*len(base))
			}
		} else if pkg == p {
			best = max(best, 2*len(p)+1)
		}
	}
	return best
}

// importTable parses the table of architecture.md. The package cell names
// its packages in backquotes ("`bus/`", or "`examples/...`" for a package
// and all below it); the cell "imports of ours" lists packages of the
// module, comma-separated, or says "none", or "everything" (no rule).
func importTable(t *testing.T) []importRow {
	t.Helper()
	data, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	const heading = "## Packages and the direction of imports"
	var rows []importRow
	inSection, pkgCol, importsCol := false, -1, -1
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == heading:
			inSection = true
			continue
		case !inSection:
			continue
		case strings.HasPrefix(line, "## "):
			inSection = false
			continue
		case !strings.HasPrefix(line, "|"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if pkgCol < 0 { // the header
			pkgCol, importsCol = slices.Index(cells, "package"), slices.Index(cells, "imports of ours")
			if pkgCol < 0 || importsCol < 0 {
				t.Fatalf("architecture.md:%d: the table has no columns \"package\" and \"imports of ours\": %q", n, line)
			}
			continue
		}
		if strings.Trim(cells[0], "-: ") == "" { // the separator
			continue
		}
		if len(cells) <= max(pkgCol, importsCol) {
			t.Fatalf("architecture.md:%d: row with %d cells: %q", n, len(cells), line)
		}
		row := importRow{line: n, name: cells[pkgCol]}
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(cells[pkgCol], -1) {
			p := m[1]
			if !strings.HasSuffix(p, "/...") {
				p = strings.TrimSuffix(p, "/")
			}
			row.patterns = append(row.patterns, p)
		}
		if len(row.patterns) == 0 {
			t.Errorf("architecture.md:%d: the package cell %q names no package in backquotes", n, cells[pkgCol])
		}
		switch imports := cells[importsCol]; imports {
		case "everything":
			row.anyAll = true
		case "none":
		default:
			for _, imp := range strings.Split(imports, ",") {
				row.imports = append(row.imports, strings.Trim(strings.TrimSpace(imp), "`"))
			}
		}
		rows = append(rows, row)
	}
	if len(rows) < 10 {
		t.Fatalf("architecture.md: %d rows found under %q: is the parser broken?", len(rows), heading)
	}
	return rows
}

// listedPackage is what the test needs of `go list -json`.
type listedPackage struct {
	ImportPath   string
	Module       struct{ Path string }
	GoFiles      []string
	CgoFiles     []string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// goList runs `go list -json` with args from the module root.
func goList(t *testing.T, args ...string) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, stderr.Bytes())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list %v: %v", args, err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestImportRules checks the table "Packages and the direction of imports"
// of architecture.md against `go list`, both ways: every package of the
// module has one row (the row naming it, else the one whose "dir/..." is
// the longest to cover it), imports only packages of ours its row lists,
// and every package a row lists is imported by one of the row's packages.
// A package's imports are those of its non-test files; for a package made
// only of tests (docs, integration, examples/sidecar), those of its tests.
//
// It also enforces the rules stated under the table: nothing imports cmd/
// or integration/, and package runtime with everything it imports builds
// without watermill.
func TestImportRules(t *testing.T) {
	rows := importTable(t)
	pkgs := goList(t, "./...")
	module := pkgs[0].Module.Path
	ours := func(path string) (string, bool) { return strings.CutPrefix(path, module+"/") }

	exists := map[string]bool{}
	for _, p := range pkgs {
		rel, _ := ours(p.ImportPath)
		exists[rel] = true
	}
	for _, r := range rows {
		for _, imp := range r.imports {
			if !exists[imp] {
				t.Errorf("architecture.md:%d: the row %s lists %q, which is not a package of the module (list packages by path; the only words are \"none\" and \"everything\")", r.line, r.name, imp)
			}
		}
		for _, p := range r.patterns {
			if !slices.ContainsFunc(pkgs, func(lp listedPackage) bool {
				rel, _ := ours(lp.ImportPath)
				return importRow{patterns: []string{p}}.match(rel) > 0
			}) {
				t.Errorf("architecture.md:%d: the row %s names %s, which is no package of the module", r.line, r.name, p)
			}
		}
	}

	used := make([]map[string]bool, len(rows)) // per row: its packages' imports of ours
	for _, p := range pkgs {
		rel, _ := ours(p.ImportPath)
		// The row naming the package, else the one with the longest
		// "/..." covering it.
		var in []int
		best := 0
		for i, r := range rows {
			switch m := r.match(rel); {
			case m > best:
				in, best = []int{i}, m
			case m == best && m > 0:
				in = append(in, i)
			}
		}
		if len(in) != 1 {
			t.Errorf("architecture.md: package %s is in %d rows of the import table, want exactly 1", rel, len(in))
			continue
		}
		r := rows[in[0]]
		imports := p.Imports
		if len(p.GoFiles)+len(p.CgoFiles) == 0 {
			imports = slices.Concat(p.TestImports, p.XTestImports)
		}
		if used[in[0]] == nil {
			used[in[0]] = map[string]bool{}
		}
		for _, imp := range imports {
			dep, ok := ours(imp)
			if !ok || dep == rel {
				continue
			}
			used[in[0]][dep] = true
			if strings.HasPrefix(dep, "cmd/") || dep == "integration" || strings.HasPrefix(dep, "integration/") {
				t.Errorf("%s imports %s: nothing may import cmd/ or integration/", rel, dep)
			}
			if !r.anyAll && !slices.Contains(r.imports, dep) {
				t.Errorf("architecture.md:%d: %s imports %s, which its row %s does not list (%s)", r.line, rel, dep, r.name, strings.Join(r.imports, ", "))
			}
		}
	}
	for i, r := range rows {
		for _, imp := range r.imports {
			if exists[imp] && !used[i][imp] {
				t.Errorf("architecture.md:%d: the row %s lists %s, which none of its packages imports", r.line, r.name, imp)
			}
		}
	}

	// runtime and everything it imports (envelope, resilience, bus,
	// snapshot, dlq, and theirs) build without watermill.
	const watermill = "github.com/ThreeDotsLabs/watermill"
	for _, p := range goList(t, "-deps", "./runtime") {
		if strings.HasPrefix(p.ImportPath, watermill) {
			continue // reported where it is imported
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, watermill) {
				t.Errorf("%s imports %s, and runtime depends on %[1]s: runtime must build without watermill (its face is bus/watermillbus)", p.ImportPath, imp)
			}
		}
	}
}
