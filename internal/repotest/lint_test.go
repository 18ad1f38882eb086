package repotest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// repoRoot is two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// run runs a command in dir and returns its standard output; its standard
// error (the go command's "downloading" lines on a cold module cache, for
// one) shows only when it fails.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

func TestGofmt(t *testing.T) {
	if out := run(t, repoRoot(t), "gofmt", "-l", "."); strings.TrimSpace(out) != "" {
		t.Fatalf("files not gofmt-ed:\n%s", out)
	}
}

func TestGoVet(t *testing.T) {
	run(t, repoRoot(t), "go", "vet", "./...")
}

// TestStaticcheck runs staticcheck, installed pinned into .tools/bin by .ci/run.
func TestStaticcheck(t *testing.T) {
	root := repoRoot(t)
	run(t, root, testkit.Tool(t, "staticcheck", "honnef.co/go/tools/cmd/staticcheck@v0.8.2"), "./...")
}

// TestGovulncheck checks the module against the Go vulnerability database
// that .ci/run indexes into .tools/vulndb: no known vulnerability that the
// code can reach, in a dependency or in the standard library of the Go it
// is built with.
func TestGovulncheck(t *testing.T) {
	root := repoRoot(t)
	db := filepath.Join(root, ".tools", "vulndb")
	if _, err := os.Stat(filepath.Join(db, "index", "db.json")); err != nil {
		t.Fatalf("no vulnerability database in %s: run .ci/run, which builds it from golang.org/x/vulndb", db)
	}
	// govulncheck asks the go command on PATH for the Go version with
	// modules off, which ignores GOTOOLCHAIN: put this build's Go first.
	goroot := strings.TrimSpace(run(t, root, "go", "env", "GOROOT"))
	cmd := exec.Command(testkit.Tool(t, "govulncheck", "golang.org/x/vuln/cmd/govulncheck@v1.10.0"), "-db", "file://"+db, "./...")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(goroot, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("govulncheck: %v\n%s", err, out)
	}
}
