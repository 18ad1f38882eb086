package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// proxyBin, controlBin and trellisBin are the trellis-proxy,
// trellis-control and trellis binaries under test.
var proxyBin, controlBin, trellisBin string

// initMissing, when not empty, says why `trellis-proxy init` cannot be used.
var initMissing string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() == 0 {
		// The Kubernetes tests change the host's iptables and sysctls,
		// which these tests check are left as they were.
		unlock, err := testkit.LockHost()
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer unlock()
	}
	dir, err := os.MkdirTemp("", "trellis-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The transparent proxies run as UID 2102: it must reach the binary.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	for _, b := range []struct {
		bin *string
		env string
		pkg string
	}{{&proxyBin, "TRELLIS_E2E_PROXY_BIN", "trellis-proxy"}, {&controlBin, "TRELLIS_E2E_CONTROL_BIN", "trellis-control"},
		{&trellisBin, "TRELLIS_E2E_TRELLIS_BIN", "trellis"}} {
		if *b.bin = os.Getenv(b.env); *b.bin != "" {
			continue
		}
		*b.bin = filepath.Join(dir, b.pkg)
		if err := build(*b.bin, "./cmd/"+b.pkg); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
	}
	initMissing = probeInit(proxyBin)
	return m.Run()
}

// build builds pkg of the repository holding the working directory into out.
func build(out, pkg string) error {
	root, err := testkit.RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// probeInit reports why the binary has no usable init subcommand, or "".
// An unknown subcommand given --help makes cobra print the root's help and
// succeed, so the usage line is what tells them apart.
func probeInit(bin string) string {
	out, err := exec.Command(bin, "init", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "trellis-proxy init") || !strings.Contains(string(out), "--cleanup") {
		return fmt.Sprintf("`trellis-proxy init --help` shows no init subcommand with --cleanup (err=%v)", err)
	}
	return ""
}
