package repotest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// protocVersionLine is the one line of generated code that depends on the
// protoc binary rather than on the pinned plugins; it is ignored so that a
// developer with another protoc is not failed for it.
var protocVersionLine = regexp.MustCompile(`(?m)^// (\t|- )protoc +v?[0-9.]+\n`)

// TestGeneratedCodeIsCurrent regenerates the API code with api/generate into a
// temporary directory and fails if any committed generated file differs, is
// missing, or is stale (its .proto is gone).
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc is not installed: apt-get install protobuf-compiler libprotobuf-dev (or run api/generate, which installs it)")
	}
	if _, err := os.Stat("/usr/include/google/protobuf/timestamp.proto"); err != nil {
		t.Skip("protobuf well-known types are not installed: apt-get install libprotobuf-dev")
	}
	root := repoRoot(t)
	out := t.TempDir()
	run(t, root, filepath.Join(root, "api", "generate"), out)

	fresh := generatedFiles(t, out)
	committed := generatedFiles(t, root)
	if len(fresh) == 0 {
		t.Fatal("api/generate produced no files; the check would be vacuous")
	}
	for rel, want := range fresh {
		got, ok := committed[rel]
		if !ok {
			t.Errorf("%s is not committed: run api/generate", rel)
			continue
		}
		if !bytes.Equal(normalize(got), normalize(want)) {
			t.Errorf("%s differs from what api/generate produces: run api/generate and never edit generated code by hand", rel)
		}
	}
	for rel := range committed {
		if _, ok := fresh[rel]; !ok {
			t.Errorf("%s is generated code without a .proto: delete it or restore its .proto", rel)
		}
	}
}

// generatedFiles reads every *.pb.go file under dir/api, keyed by its path
// relative to dir.
func generatedFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(filepath.Join(dir, "api"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".pb.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[rel] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func normalize(b []byte) []byte { return protocVersionLine.ReplaceAll(b, nil) }
