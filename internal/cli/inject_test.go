package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func anchorFile(t *testing.T) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root.test"}, IsCA: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.crt")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return path
}

func TestInjectAndUninjectManifests(t *testing.T) {
	manifest := filepath.Join("..", "kube", "inject", "testdata", "app.yaml")
	out, err := execute("inject", manifest, "--trust-anchors", anchorFile(t), "--proxy-image", "registry.test/trellis-proxy:v9")
	if err != nil {
		t.Fatalf("inject: %v\n%s", err, out)
	}
	for _, want := range []string{"name: trellis-proxy", "image: registry.test/trellis-proxy:v9", "BEGIN CERTIFICATE",
		"--identity-addr=trellis-identity.trellis.svc.cluster.local:8080", "1 Pod template(s) changed, 0 left as they were", "kind: Service"} {
		if !strings.Contains(out, want) {
			t.Errorf("inject output lacks %q:\n%s", want, out)
		}
	}
	injected := filepath.Join(t.TempDir(), "injected.yaml")
	os.WriteFile(injected, []byte(strings.Replace(out, "1 Pod template(s) changed, 0 left as they were\n", "", 1)), 0o644)
	back, err := execute("uninject", injected)
	if err != nil || strings.Contains(back, "trellis-") || !strings.Contains(back, "name: migrate") {
		t.Fatalf("uninject: %v\n%s", err, back)
	}
}

func TestInjectRefusesWhatItCannotUse(t *testing.T) {
	manifest := filepath.Join("..", "kube", "inject", "testdata", "app.yaml")
	notPEM := filepath.Join(t.TempDir(), "x")
	os.WriteFile(notPEM, []byte("hello"), 0o644)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    config.trellis.dev/proxy-log-level: loud\nspec:\n  containers: [{name: c}]\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inject", manifest}, "--trust-anchors is required"},
		{[]string{"inject", manifest, "--trust-anchors", notPEM}, "no PEM certificate"},
		{[]string{"inject", bad, "--trust-anchors", anchorFile(t)}, "document 1 (Pod p): annotation config.trellis.dev/proxy-log-level"},
		{[]string{"inject", "nope.yaml", "--trust-anchors", anchorFile(t)}, "nope.yaml"},
	} {
		if _, err := execute(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want an error naming %q", tc.args, err, tc.want)
		}
	}
}
