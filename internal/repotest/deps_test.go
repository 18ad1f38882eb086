package repotest

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/deps/*.txt with what the binaries link now")

// heavy are packages the data-plane proxy must never link: it runs next to
// every service instance, so its size and memory are multiplied by the
// fleet.
var heavy = []string{
	"k8s.io/client-go",
	"k8s.io/apimachinery",
	"github.com/prometheus/client_golang",
	"github.com/prometheus/prometheus",
	"go.etcd.io/bbolt",
	"google.golang.org/grpc/xds",
	"cloud.google.com",
	"github.com/aws",
	"github.com/Azure",
}

// Each binary links the packages (outside the standard library) that its
// list in testdata/deps names, no more and no fewer: a new dependency is a
// reviewed change to that list (go test ./internal/repotest -run
// TestDependencyLists -update). trellis-proxy's list has none of heavy.
func TestDependencyLists(t *testing.T) {
	root := repoRoot(t)
	for _, bin := range []string{"trellis", "trellis-control", "trellis-proxy"} {
		got := strings.Fields(run(t, root, "go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./cmd/"+bin))
		if len(got) < 50 {
			t.Fatalf("go list found only %d packages for %s; the check would be vacuous", len(got), bin)
		}
		slices.Sort(got)
		file := filepath.Join("testdata", "deps", bin+".txt")
		if *update {
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%v (go test ./internal/repotest -run TestDependencyLists -update writes it)", err)
		}
		want := strings.Fields(string(b))
		if added, removed := diff(got, want), diff(want, got); len(added)+len(removed) > 0 {
			t.Errorf("cmd/%s links %d packages not in %s: %v\nand no longer %d it lists: %v\n(review, then go test ./internal/repotest -run TestDependencyLists -update)",
				bin, len(added), file, added, len(removed), removed)
		}
		if bin != "trellis-proxy" {
			continue
		}
		for _, d := range got {
			for _, h := range heavy {
				if d == h || strings.HasPrefix(d, h+"/") {
					t.Errorf("cmd/trellis-proxy links %s (%s); keep heavy packages out of the proxy", d, h)
				}
			}
		}
	}
}

// diff is what a has that b lacks (both sorted).
func diff(a, b []string) []string {
	var out []string
	for _, s := range a {
		if _, found := slices.BinarySearch(b, s); !found {
			out = append(out, s)
		}
	}
	return out
}

// Every package says what it is for.
func TestEveryPackageHasADoc(t *testing.T) {
	out := run(t, repoRoot(t), "go", "list", "-f", "{{if not .Doc}}{{.ImportPath}}{{end}}", "./...")
	if missing := strings.Fields(out); len(missing) > 0 {
		t.Errorf("packages without a package doc comment: %v", missing)
	}
}

// go.mod and go.sum are what go mod tidy makes them.
func TestGoModIsTidy(t *testing.T) {
	if out := run(t, repoRoot(t), "go", "mod", "tidy", "-diff"); out != "" {
		t.Errorf("go mod tidy would change go.mod or go.sum:\n%s", out)
	}
}
