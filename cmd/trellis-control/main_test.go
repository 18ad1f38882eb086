package main

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// The test binary doubles as trellis-control: with this variable set it runs
// main instead of the tests, so these tests exercise the real process, its
// flags and its signals.
const asControl = "TRELLIS_CONTROL_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	testkit.RunMainIf(asControl, main)
	os.Exit(m.Run())
}

func controlCmd(t *testing.T, args ...string) *exec.Cmd {
	return testkit.Command(t, asControl, args...)
}

func freePort(t *testing.T) string { return testkit.FreeAddr(t) }

func TestIdentityHelpExplains(t *testing.T) {
	out, err := controlCmd(t, "identity", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, s := range []string{"trust anchor (root) → issuer (intermediate) → leaf", "--data-dir", "--trust-anchor-pem", "--join-token-key-file", "--leaf-lifetime", "PERMISSION_DENIED", "--issuer-expiry-warning"} {
		if !bytes.Contains(out, []byte(s)) {
			t.Errorf("help lacks %q", s)
		}
	}
}

func TestIdentityRefusesBadConfiguration(t *testing.T) {
	dir := t.TempDir()
	anchor, _ := pki.GenerateTrustAnchor("cluster.local", 0, time.Now())
	foreign, _ := pki.GenerateTrustAnchor("cluster.local", 0, time.Now())
	issuer, _ := pki.GenerateIssuer(foreign, "cluster.local", 0, time.Now())
	key, _ := pki.EncodeKey(issuer.Key)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	a, i, k := write("a.pem", pki.EncodeCertificates(anchor.Cert)), write("i.pem", pki.EncodeCertificates(issuer.Cert)), write("k.pem", key)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"identity"}, "no certificate authority: give --data-dir"},
		{[]string{"identity", "--data-dir", dir, "--trust-domain", "NOPE"}, "--trust-domain"},
		{[]string{"identity", "--no-such-flag"}, "no-such-flag"},
		{[]string{"identity", "--trust-anchor-pem", a, "--issuer-cert-pem", i, "--issuer-key-pem", k, "--join-token-key-file", filepath.Join(dir, "jt.pem")},
			"is not signed by the trust anchor"},
	} {
		out, err := controlCmd(t, tc.args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%v: exit %v; want status 1", tc.args, err)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: output %q does not say %q", tc.args, out, tc.want)
		}
	}
}

func TestIdentityFirstStartAndSIGTERM(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "identity")
	admin := freePort(t)
	cmd := controlCmd(t, "identity", "--data-dir", dir, "--addr", freePort(t), "--admin-addr", admin, "--log-format", "text")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 20s; logs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for name, mode := range map[string]os.FileMode{pki.AnchorFile: 0o644, pki.AnchorKeyFile: 0o600, pki.IssuerFile: 0o644, pki.IssuerKeyFile: 0o600, "join-token-key.pem": 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v; want %v", name, err, st.Mode().Perm(), mode)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v; logs:\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("still running 20s after SIGTERM")
	}
	for _, s := range []string{"generated a trust anchor and issuer", "identity service shutting down"} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("logs lack %q:\n%s", s, logs.String())
		}
	}
}
