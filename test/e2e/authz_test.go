package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/metricstest"
)

// In transparent mode, with the mesh's default inbound policy deny (trellis
// up --default-inbound-policy) and one
// AuthorizationPolicy letting only web in: web's calls to emoji (through
// web's proxy, as its application makes them) succeed, other's get 403,
// and so does a client on the host outside the mesh; emoji's proxy counts
// each.
func TestAuthorizationTransparent(t *testing.T) {
	requireTransparent(t)
	fortio := fortioBin(t)
	dataDir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dataDir), 0o711); err != nil {
		t.Fatal(err)
	}
	up := startTrellis(t, -1, nil, "--data-dir", dataDir, "up", "--network", "bridge", "--control-port", strconv.Itoa(freePort(t)),
		"--admin-addr", loopback(freePort(t)), "--default-inbound-policy", "deny")
	up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)
	manifest := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(manifest, []byte(`apiVersion: policy.trellis.dev/v1alpha1
kind: Server
metadata: {name: emoji-http, namespace: default}
spec: {podSelector: {matchLabels: {trellis.dev/workload: emoji}}, port: 8080}
---
apiVersion: policy.trellis.dev/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: web-only, namespace: default}
spec: {identityRefs: [{kind: ServiceAccount, name: web}]}
---
apiVersion: policy.trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: emoji-from-web, namespace: default}
spec:
  targetRef: {group: policy.trellis.dev, kind: Server, name: emoji-http}
  requiredAuthenticationRefs: [{group: policy.trellis.dev, kind: MeshTLSAuthentication, name: web-only}]
`), 0o644)
	if out, err := exec.Command(trellisBin, "--data-dir", dataDir, "apply", "-f", manifest).CombinedOutput(); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	for _, name := range []string{"emoji", "web", "other"} {
		args := []string{"--data-dir", dataDir, "run", "--name", name, "--port", "8080"}
		r := startTrellis(t, -1, nil, append(args, "--", fortio, "server", "-http-port", "$LISTEN_ADDR", "-grpc-port", "disabled",
			"-redirect-port", "disabled", "-tcp-port", "disabled", "-udp-port", "disabled")...)
		r.waitOutput(t, regexp.MustCompile(name+`-0: started`), 20*time.Second)
	}
	var emoji workload
	for deadline := time.Now().Add(20 * time.Second); emoji.Spec.Address == ""; time.Sleep(50 * time.Millisecond) {
		if emoji = workloads(t, dataDir)["emoji-0"]; time.Now().After(deadline) {
			t.Fatal("emoji-0 never registered")
		}
	}
	out, err := exec.Command(trellisBin, "--data-dir", dataDir, "get", "svc", "emoji", "-o", "json").Output()
	var svc struct{ Spec struct{ ClusterIP string } }
	if err != nil || json.Unmarshal(out, &svc) != nil || svc.Spec.ClusterIP == "" {
		t.Fatalf("get svc emoji: %v\n%s", err, out)
	}
	from := func(netns, addr string) int {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
				return (&NetNSDialer{NetNS: netns}).DialContext(ctx, network, a)
			}}}
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	emojiVIP := net.JoinHostPort(svc.Spec.ClusterIP, "8080")
	for _, tc := range []struct {
		who, netns, addr string
		want             int
	}{
		{"web", "trellis-default-web-0", emojiVIP, 200},
		{"other", "trellis-default-other-0", emojiVIP, 403},
		{"the host", "", net.JoinHostPort(emoji.Spec.Address, "8080"), 403},
	} {
		got := 0
		for deadline := time.Now().Add(10 * time.Second); got != tc.want && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			got = from(tc.netns, tc.addr)
		}
		if got != tc.want {
			t.Errorf("%s → emoji: %d, want %d", tc.who, got, tc.want)
		}
	}
	m := metricstest.Scrape(t, "http://"+net.JoinHostPort(emoji.Spec.Address, strconv.Itoa(emoji.Spec.AdminPort))+"/metrics")
	if n := m.Sum("inbound_http_authz_allow_total", map[string]string{"srv_name": "emoji-http", "authz_name": "emoji-from-web"}); n < 1 {
		t.Errorf("emoji's proxy counted no call allowed by emoji-from-web")
	}
	if n := m.Sum("inbound_http_authz_deny_total", map[string]string{"srv_name": "emoji-http"}); n < 2 {
		t.Errorf("emoji's proxy counted %v denied calls, want at least 2", n)
	}
}
