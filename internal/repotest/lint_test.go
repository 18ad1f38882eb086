package repotest

import (
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

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
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
