package kube

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/kube/inject"
	"github.com/trellis-mesh/trellis/internal/metricstest"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// trellis runs the CLI against the test cluster with stdin and returns its
// standard output and error together, and whether it succeeded.
func trellis(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(trellisBin, args...)
	cmd.Env = append(cmd.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustTrellis is trellis that fails t on an error, returning only stdout.
func mustTrellis(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(trellisBin, args...)
	cmd.Env = append(cmd.Environ(), "KUBECONFIG="+kubeconfig)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("trellis %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

var installOnce struct {
	anchors string
	anchor  *pki.KeyPair
}

// identityService installs Trellis once for every test, as a user would:
// the CRDs, then the control plane with a hierarchy of its own, piped to
// kubectl; then `trellis check`, which must pass within 60 s of the apply.
// It returns the trust anchors.
func identityService(t *testing.T) string {
	t.Helper()
	if installOnce.anchors != "" {
		return installOnce.anchors
	}
	t.Cleanup(func() { diagnose(t, "trellis") })
	dir := t.TempDir()
	now := time.Now()
	anchor, err := pki.GenerateTrustAnchor("cluster.local", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	issuer := writeIssuer(t, dir, anchor, 0)
	kubectl(t, mustTrellis(t, "install", "--crds"), "apply", "-f", "-")
	// The test node has two CPUs for every test's Pods: small requests.
	kubectl(t, mustTrellis(t, controlPlaneFlags("install", "--identity-trust-anchors-file", filepath.Join(dir, "ca.crt"),
		"--identity-issuer-certificate-file", issuer[0], "--identity-issuer-key-file", issuer[1])...), "apply", "-f", "-")
	applied := time.Now()
	if out, err := trellis(t, "", "check", "--wait", "60s"); err != nil {
		t.Fatalf("trellis check did not pass within 60 s of the apply: %v\n%s", err, out)
	}
	t.Logf("trellis check passed %v after kubectl apply", time.Since(applied).Round(100*time.Millisecond))
	installOnce.anchors, installOnce.anchor = string(pki.EncodeCertificates(anchor.Cert)), anchor
	return installOnce.anchors
}

// controlPlaneFlags are the arguments of `trellis install` or `upgrade`
// (command) for the test cluster, then extra: the images built for this
// run, and small CPU requests (the node's two CPUs serve every test's Pods).
func controlPlaneFlags(command string, extra ...string) []string {
	return append([]string{command, "--image-version", version, "--image-pull-policy", "Never",
		"--set", "proxy.cpuRequest=10m", "--set", "resources.requests.cpu=10m",
		"--set", "prometheus.image=" + prometheusImage, "--set", "prometheus.pullPolicy=Never",
		"--set", "prometheus.resources.requests.cpu=10m"}, extra...)
}

// writeIssuer writes the anchor (ca.crt) and a new issuer it signs, valid
// for lifetime (the default if zero), into dir; it returns the issuer's
// certificate and key files.
func writeIssuer(t *testing.T, dir string, anchor *pki.KeyPair, lifetime time.Duration) [2]string {
	t.Helper()
	issuer, err := pki.GenerateIssuer(anchor, "cluster.local", lifetime, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.EncodeKey(issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	files := [2]string{filepath.Join(dir, "issuer.crt"), filepath.Join(dir, "issuer.key")}
	for path, b := range map[string][]byte{filepath.Join(dir, "ca.crt"): pki.EncodeCertificates(anchor.Cert),
		files[0]: pki.EncodeCertificates(issuer.Cert), files[1]: key} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// identityMetrics scrapes the identity service's admin port.
func identityMetrics(t *testing.T) metricstest.Families {
	t.Helper()
	ip := kubectl(t, "", "-n", "trellis", "get", "pod", "-l", "app.kubernetes.io/name=identity", "-o", "jsonpath={.items[0].status.podIP}")
	return metricstest.Scrape(t, "http://"+ip+":9990/metrics")
}

// checkFails runs `trellis check` with args, which must fail with a line
// holding every one of want.
func checkFails(t *testing.T, args []string, want ...string) {
	t.Helper()
	out, err := trellis(t, "", append([]string{"check", "--wait", "5s"}, args...)...)
	if err == nil {
		t.Fatalf("trellis check passed:\n%s", out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("trellis check's report lacks %q:\n%s", w, out)
		}
	}
	t.Logf("trellis check %s:\n%s", strings.Join(args, " "), out)
}

// `trellis check` fails, with a line naming the cause, when the webhook
// is down, when the issuer expires within the warning window, and when a
// meshed Pod's proxy is not ready; `trellis upgrade` keeps the cluster's
// trust anchors and issuer.
func TestCheckNamesWhatIsWrong(t *testing.T) {
	needCluster(t)
	anchors := identityService(t)
	t.Cleanup(func() { diagnose(t, "trellis"); diagnose(t, "broken") })
	ctx := context.Background()

	t.Run("upgrade keeps the hierarchy", func(t *testing.T) {
		before, err := client.CoreV1().Secrets("trellis").Get(ctx, "trellis-identity-issuer", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		kubectl(t, mustTrellis(t, controlPlaneFlags("upgrade")...), "apply", "-f", "-")
		cm, err := client.CoreV1().ConfigMaps("trellis").Get(ctx, "trellis-trust-anchors", metav1.GetOptions{})
		if err != nil || cm.Data["ca.crt"] != anchors {
			t.Fatalf("after upgrade the trust anchors changed (%v)", err)
		}
		after, err := client.CoreV1().Secrets("trellis").Get(ctx, "trellis-identity-issuer", metav1.GetOptions{})
		if err != nil || string(after.Data["tls.crt"]) != string(before.Data["tls.crt"]) {
			t.Fatalf("after upgrade the issuer changed (%v)", err)
		}
		if out, err := trellis(t, "", "check", "--wait", "60s"); err != nil {
			t.Fatalf("check after upgrade: %v\n%s", err, out)
		}
	})

	// A rotated issuer Secret (as cert-manager renews it) reaches the
	// identity service without a restart; this one expires within the
	// warning window, which check reports.
	t.Run("issuer rotated, expiring", func(t *testing.T) {
		secrets := client.CoreV1().Secrets("trellis")
		original, err := secrets.Get(ctx, "trellis-identity-issuer", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cur, err := secrets.Get(ctx, original.Name, metav1.GetOptions{})
			if err == nil {
				cur.Data = original.Data
				_, err = secrets.Update(ctx, cur, metav1.UpdateOptions{})
			}
			if err != nil {
				t.Errorf("restoring the issuer: %v", err)
			}
		})
		files := writeIssuer(t, t.TempDir(), installOnce.anchor, 10*24*time.Hour)
		crt, _ := os.ReadFile(files[0])
		key, _ := os.ReadFile(files[1])
		expiring := original.DeepCopy()
		expiring.Data["tls.crt"], expiring.Data["tls.key"] = crt, key
		rotated := time.Now()
		if _, err := secrets.Update(ctx, expiring, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		issuer, err := pki.ParseCertificates(crt)
		if err != nil {
			t.Fatal(err)
		}
		for want := float64(issuer[0].NotAfter.Unix()); ; time.Sleep(time.Second) {
			got := identityMetrics(t).Sum("identity_issuer_expiration_timestamp_seconds", nil)
			if got == want {
				t.Logf("the identity service issues from the rotated issuer %v after the Secret's update", time.Since(rotated).Round(time.Second))
				break
			}
			if time.Since(rotated) > 2*time.Minute {
				t.Fatalf("the identity service still issues from an issuer expiring at %v, not the rotated one (%v)",
					time.Unix(int64(got), 0).UTC(), issuer[0].NotAfter.UTC())
			}
		}
		checkFails(t, nil, "× the issuer is signed by the trust anchors and valid", "within the 60 days warning window")
	})

	t.Run("webhook down", func(t *testing.T) {
		kubectl(t, "", "-n", "trellis", "scale", "deployment/trellis-injector", "--replicas=0")
		t.Cleanup(func() {
			kubectl(t, "", "-n", "trellis", "scale", "deployment/trellis-injector", "--replicas=1")
			kubectl(t, "", "-n", "trellis", "rollout", "status", "deployment/trellis-injector", "--timeout=120s")
		})
		kubectl(t, "", "-n", "trellis", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=injector", "--timeout=60s")
		checkFails(t, nil, "× the injector answers the API server", "Service trellis/trellis-injector has no ready endpoint")
	})

	t.Run("proxy not ready", func(t *testing.T) {
		// A proxy told the wrong identity service never gets its
		// certificate, so never becomes ready.
		cfg := injectConfig(t, anchors)
		cfg.IdentityAddr = "trellis-identity.nowhere.svc.cluster.local:8080"
		var out bytes.Buffer
		pod := "apiVersion: v1\nkind: Namespace\nmetadata: {name: broken}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: lost, namespace: broken}\n" +
			"spec:\n  containers:\n  - {name: app, image: localhost/pause:3.10, imagePullPolicy: Never}\n"
		if _, err := inject.Manifests(strings.NewReader(pod), &out, cfg.Patch); err != nil {
			t.Fatal(err)
		}
		kubectl(t, out.String(), "apply", "-f", "-")
		dropNamespaces(t, "broken")
		checkFails(t, []string{"--proxy"}, "× every meshed Pod's proxy is ready", "broken/lost: proxy")
	})
}
