package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
)

func TestWarnsOfAnotherVersionOnPath(t *testing.T) {
	dir := t.TempDir()
	script := func(name, version string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho "+version+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var out strings.Builder
	warnIfAnotherVersion(&out, script("same", buildinfo.String()))
	if out.Len() != 0 {
		t.Errorf("a binary of this version: warned %q", out.String())
	}
	warnIfAnotherVersion(&out, script("old", "v0.0.1"))
	if !strings.Contains(out.String(), "is version v0.0.1, this trellis "+buildinfo.String()) {
		t.Errorf("a binary of another version: %q", out.String())
	}
	out.Reset()
	warnIfAnotherVersion(&out, filepath.Join(dir, "missing"))
	if !strings.Contains(out.String(), "cannot tell its version") {
		t.Errorf("a binary that does not run: %q", out.String())
	}
	// On PATH, sibling finds it and warns.
	script(proxyBinary, "v0.0.1")
	t.Setenv("PATH", dir)
	if p, err := sibling(proxyBinary); err != nil || p != filepath.Join(dir, proxyBinary) {
		t.Errorf("sibling(%s) = %q, %v", proxyBinary, p, err)
	}
}
