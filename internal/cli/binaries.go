package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
)

// proxyBinary is the data-plane proxy's binary, which trellis run and
// trellis demo start next to every instance.
const proxyBinary = "trellis-proxy"

// controlBinary is the control plane's binary, which trellis up and
// trellis demo run.
const controlBinary = "trellis-control"

// sibling finds the binary name beside this one (symbolic links followed),
// else on PATH, warning when that one is of another version; the error
// says how to build it.
func sibling(name string) (string, error) {
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		p, err = filepath.Abs(p)
		if err == nil {
			warnIfAnotherVersion(os.Stderr, p)
		}
		return p, err
	}
	return "", fmt.Errorf("%s is neither beside %s nor on PATH: build the binaries together, e.g. go build -o bin/ ./cmd/... and run bin/trellis", name, self)
}

// warnIfAnotherVersion says on w when the binary at path reports a version
// other than this one's: a trellis-proxy from another release on PATH may
// not speak what this CLI and its control plane expect.
func warnIfAnotherVersion(w io.Writer, path string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "version").Output()
	v := strings.TrimSpace(string(out))
	switch {
	case err != nil:
		fmt.Fprintf(w, "warning: %s: cannot tell its version (%v); this trellis is %s\n", path, err, buildinfo.String())
	case v != buildinfo.String():
		fmt.Fprintf(w, "warning: %s is version %s, this trellis %s: build them together (go build -o bin/ ./cmd/...)\n", path, v, buildinfo.String())
	}
}
