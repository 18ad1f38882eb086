package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// proxyBinary is the data-plane proxy's binary, which trellis run and
// trellis demo start next to every instance.
const proxyBinary = "trellis-proxy"

// controlBinary is the control plane's binary, which trellis up and
// trellis demo run.
const controlBinary = "trellis-control"

// sibling finds the binary name beside this one (symbolic links followed),
// else on PATH; the error says how to build it.
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
		return filepath.Abs(p)
	}
	return "", fmt.Errorf("%s is neither beside %s nor on PATH: build the binaries together, e.g. go build -o bin/ ./cmd/... and run bin/trellis", name, self)
}
