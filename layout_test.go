package main

import (
	"bufio"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// module is this module's import path.
const module = "github.com/scalelab/scalelab"

// The layers of the tree, from the top (docs/ARCHITECTURE.md): a package
// may import packages of its own layer only where allowed below, and of
// the layers under it; never of a layer above. The test fails on any
// import that goes up, so the folders keep telling the architecture.
const (
	layerPrograms = iota // the binary (.), the bench programs (bench/...) and the examples (examples/...)
	layerCommands        // cli: the command line, one function per command
	layerWiring          // platform/...: starts the roles together (up, bench, drills)
	layerRoles           // balancer, gateway, worker, cachesvc, dbsvc; client, the SDK beside them
	layerConfig          // natsconf: the bus's configuration tables
	layerPlumbing        // internal/...: what two or more roles share
)

// layerNames are the layers' names in messages.
var layerNames = []string{"programs", "commands", "wiring", "roles", "config", "plumbing"}

// roleClients are the only imports from one role into another: a role's
// client API (dbsvc.Client, worker.ProcessClient) is how the others call
// it. Anything else a second role needs belongs under internal/.
var roleClients = map[string][]string{
	"gateway": {"dbsvc", "worker"},
}

// layerOf returns the layer of the package in dir (a slash path relative
// to the module's root) and its top folder.
func layerOf(dir string) (layer int, top string) {
	top, _, _ = strings.Cut(dir, "/")
	switch top {
	case ".", "bench", "examples":
		return layerPrograms, top
	case "cli":
		return layerCommands, top
	case "platform":
		return layerWiring, top
	case "balancer", "gateway", "worker", "cachesvc", "dbsvc", "client":
		return layerRoles, top
	case "natsconf":
		return layerConfig, top
	case "internal":
		return layerPlumbing, top
	}
	return -1, top
}

// pkg is one package of the tree, as read from its files' imports.
type pkg struct {
	dir         string          // relative to the module's root, slash-separated
	imports     map[string]bool // this module's packages (dirs) its non-test files import
	testImports map[string]bool // the same, of its _test.go files
}

// readTree reads every package of the module (nested modules excluded):
// the imports of its files, without building anything.
func readTree(t *testing.T) map[string]*pkg {
	t.Helper()
	pkgs := map[string]*pkg{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); p != "." && err == nil {
				return filepath.SkipDir // another module (bench/tasks, bench/evproxy)
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(p))
		pk := pkgs[dir]
		if pk == nil {
			pk = &pkg{dir: dir, imports: map[string]bool{}, testImports: map[string]bool{}}
			pkgs[dir] = pk
		}
		for _, imp := range f.Imports {
			ip := strings.Trim(imp.Path.Value, `"`)
			if ip != module && !strings.HasPrefix(ip, module+"/") {
				continue
			}
			to := strings.TrimPrefix(strings.TrimPrefix(ip, module), "/")
			if to == "" {
				to = "."
			}
			if strings.HasSuffix(p, "_test.go") {
				pk.testImports[to] = true
			} else {
				pk.imports[to] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// importRule says why from may not import to, or "" when it may; test
// says whether the import is in a _test.go file: the tests of roles and of
// natsconf may also import roles, to run them as fixtures.
func importRule(from, to string, test bool) string {
	fl, ftop := layerOf(from)
	tl, ttop := layerOf(to)
	switch {
	case fl < 0:
		return fmt.Sprintf("%s is in no layer: add its folder to layerOf and docs/ARCHITECTURE.md", from)
	case tl < 0:
		return fmt.Sprintf("%s is in no layer: add its folder to layerOf and docs/ARCHITECTURE.md", to)
	case ttop == ftop:
		return "" // a package and its own subpackages
	case tl < fl:
		return fmt.Sprintf("%s (%s) imports %s (%s), a layer above it", from, layerNames[fl], to, layerNames[tl])
	case tl == layerPrograms:
		return fmt.Sprintf("%s imports %s: nothing imports a program", from, to)
	case test && tl == layerRoles && (fl == layerRoles || fl == layerConfig):
		return "" // a test that runs roles as fixtures
	case fl == layerRoles && tl == layerRoles && !slices.Contains(roleClients[ftop], ttop):
		return fmt.Sprintf("role %s imports role %s, which is not one of its clients (roleClients)", from, to)
	case fl == layerRoles && tl == layerConfig:
		return fmt.Sprintf("role %s imports %s: roles take the names they share from internal/, natsconf configures the bus around them", from, to)
	}
	return ""
}

// TestImportDirection fails on any import that goes up the layers: a role
// importing the wiring or natsconf, natsconf importing a role, plumbing
// importing anything above it. Tests may import what their package may,
// and (roles' and natsconf's) roles to run as fixtures.
func TestImportDirection(t *testing.T) {
	pkgs := readTree(t)
	if len(pkgs) < 20 {
		t.Fatalf("read %d packages, want the whole tree", len(pkgs))
	}
	for _, p := range pkgs {
		for to := range p.imports {
			if why := importRule(p.dir, to, false); why != "" {
				t.Error(why)
			}
		}
		for to := range p.testImports {
			if why := importRule(p.dir, to, true); why != "" {
				t.Error("test: " + why)
			}
		}
	}
}

// TestImportRuleCatches makes sure TestImportDirection can fail: the
// imports the issue that set the layers named as wrong are refused.
func TestImportRuleCatches(t *testing.T) {
	for _, tt := range []struct{ from, to string }{
		{"gateway", "platform"},         // a role importing the wiring
		{"worker", "cli"},               // a role importing the commands
		{"natsconf", "dbsvc"},           // the bus's configuration importing a role
		{"internal/task", "worker"},     // plumbing importing a role
		{"internal/cache", "natsconf"},  // plumbing importing the configuration
		{"dbsvc", "gateway"},            // a role importing a role that is not its client
		{"gateway", "natsconf"},         // a role importing natsconf
		{"platform", "cli"},             // the wiring importing the commands
		{"platform/dashboard", "bench"}, // a program
		{"newfolder", "internal/task"},  // a folder in no layer
	} {
		if importRule(tt.from, tt.to, false) == "" {
			t.Errorf("importRule(%s, %s) allows it, want refused", tt.from, tt.to)
		}
	}
	for _, tt := range []struct{ from, to string }{
		{"gateway", "dbsvc"}, {"gateway", "internal/task"}, {"natsconf", "internal/task"},
		{"platform", "natsconf"}, {"cli", "platform"}, {".", "cli"}, {"balancer", "balancer/internal/rawconn"},
	} {
		if why := importRule(tt.from, tt.to, false); why != "" {
			t.Errorf("importRule(%s, %s) = %q, want allowed", tt.from, tt.to, why)
		}
	}
}

// TestInternalIsShared: a package under internal/ is plumbing that two or
// more packages outside it use (else it belongs inside its one user), and
// Test helpers (testutil, *test) are exempt.
func TestInternalIsShared(t *testing.T) {
	pkgs := readTree(t)
	users := map[string]map[string]bool{} // internal package -> top folders importing it
	for _, p := range pkgs {
		_, top := layerOf(p.dir)
		for to := range p.imports {
			if strings.HasPrefix(to, "internal/") {
				if users[to] == nil {
					users[to] = map[string]bool{}
				}
				if !strings.HasPrefix(p.dir, "internal/") {
					users[to][top] = true
				} else {
					users[to][p.dir] = true
				}
			}
		}
	}
	for dir := range pkgs {
		if !strings.HasPrefix(dir, "internal/") || strings.HasSuffix(dir, "test") || strings.HasSuffix(dir, "testutil") {
			continue
		}
		if n := len(users[dir]); n < 2 && len(users[dir]) > 0 {
			t.Errorf("%s has one user (%v): move it into that package", dir, keys(users[dir]))
		}
	}
}

// TestArchitectureMap: docs/ARCHITECTURE.md's package map lists every
// package of the tree, each once, in the layer it is in, and nothing that
// is not there. A new package fails the test until the map says where it
// sits.
func TestArchitectureMap(t *testing.T) {
	pkgs := readTree(t)
	f, err := os.Open("docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A map row: | `dir` | layer | what it owns | must not import |
	row := regexp.MustCompile("^\\| `([^`]+)` \\| (\\w+) \\|")
	listed := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := row.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if _, dup := listed[m[1]]; dup {
			t.Errorf("ARCHITECTURE.md lists %s twice", m[1])
		}
		listed[m[1]] = m[2]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for dir := range pkgs {
		layer, _ := layerOf(dir)
		name, ok := listed[dir]
		switch {
		case !ok:
			t.Errorf("ARCHITECTURE.md's package map does not list %s", dir)
		case layer < 0 || name != layerNames[layer]:
			t.Errorf("ARCHITECTURE.md puts %s in layer %q; it is in %q", dir, name, layerName(layer))
		}
	}
	for dir := range listed {
		if _, ok := pkgs[dir]; !ok && !strings.HasPrefix(dir, "bench/") {
			t.Errorf("ARCHITECTURE.md lists %s, which is not a package of this module", dir)
		}
	}
}

// layerName is layer's name, or "none".
func layerName(layer int) string {
	if layer < 0 {
		return "none"
	}
	return layerNames[layer]
}

// keys returns m's keys, sorted.
func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestEveryPackageSaysItsLayer: every package but the programs has a
// doc.go whose comment says what it owns and names its layer ("Layer:
// roles"), with what it must not import, as go doc shows it.
func TestEveryPackageSaysItsLayer(t *testing.T) {
	for dir := range readTree(t) {
		layer, _ := layerOf(dir)
		if layer == layerPrograms {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "doc.go"))
		if err != nil {
			t.Errorf("%s has no doc.go: %v", dir, err)
			continue
		}
		text := strings.ReplaceAll(string(b), "\n// ", " ") // the comment as one line
		if want := "// Layer: " + layerName(layer) + " "; !strings.Contains(text, want) {
			t.Errorf("%s/doc.go does not say %q", dir, want)
		}
		if !strings.Contains(text, "must not import") {
			t.Errorf("%s/doc.go does not say what it must not import", dir)
		}
	}
}
