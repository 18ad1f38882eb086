package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	demov1 "github.com/trellis-mesh/trellis/api/demo/v1"
	"github.com/trellis-mesh/trellis/internal/metricstest"
)

// The policy of TestAuthorizationTransparent: only web may call emoji
// (whose port its Server names, as Linkerd's manifests do);
// web's GET /api/list and /api/results admit meshed clients only, its
// POST /api/vote nobody.
const demoPolicy = `apiVersion: policy.trellis.dev/v1alpha1
kind: Server
metadata: {name: emoji-grpc, namespace: default}
spec: {podSelector: {matchLabels: {trellis.dev/workload: emoji}}, port: grpc, proxyProtocol: gRPC}
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
  targetRef: {group: policy.trellis.dev, kind: Server, name: emoji-grpc}
  requiredAuthenticationRefs: [{group: policy.trellis.dev, kind: MeshTLSAuthentication, name: web-only}]
---
apiVersion: policy.trellis.dev/v1alpha1
kind: Server
metadata: {name: web-http, namespace: default}
spec: {podSelector: {matchLabels: {trellis.dev/workload: web}}, port: 8080, proxyProtocol: HTTP/1}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-read, namespace: default}
spec:
  parentRefs: [{group: policy.trellis.dev, kind: Server, name: web-http}]
  rules: [{matches: [{method: GET, path: {type: Exact, value: /api/list}}, {method: GET, path: {type: Exact, value: /api/results}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-vote, namespace: default}
spec:
  parentRefs: [{group: policy.trellis.dev, kind: Server, name: web-http}]
  rules: [{matches: [{method: POST, path: {type: Exact, value: /api/vote}}]}]
---
apiVersion: policy.trellis.dev/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: meshed, namespace: default}
spec: {identities: ['*']}
---
apiVersion: policy.trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-read-meshed, namespace: default}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: web-read}
  requiredAuthenticationRefs: [{group: policy.trellis.dev, kind: MeshTLSAuthentication, name: meshed}]
`

// The demo application in transparent mode under the mesh's default
// inbound policy deny (trellis up --default-inbound-policy) and
// demoPolicy: each call is allowed or denied as the policy says, by
// emoji's, voting's, web's and traffic's proxies, and counted; policy
// changes (an audit, a new authorization) take effect under load with no
// allowed request failing; and traffic leaving the mesh for a host
// outside it is allowed until an EgressNetwork denies it, counted by
// hostname.
func TestAuthorizationTransparent(t *testing.T) {
	requireTransparent(t)
	dataDir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dataDir), 0o711); err != nil {
		t.Fatal(err)
	}
	up := startTrellis(t, -1, nil, "--data-dir", dataDir, "up", "--network", "bridge", "--control-port", strconv.Itoa(freePort(t)),
		"--admin-addr", loopback(freePort(t)), "--default-inbound-policy", "deny", "--metrics-scrape-interval", "1s")
	up.waitOutput(t, regexp.MustCompile(`control plane serving`), 20*time.Second)
	applyManifest(t, dataDir, demoPolicy)
	app := func(name string, args ...string) []string {
		return append([]string{"--", trellisBin, "demo-app", name, "--listen", "$LISTEN_ADDR"}, args...)
	}
	for _, w := range []struct {
		name string
		args []string
	}{
		// Emoji's port is named after its protocol: emoji-grpc selects it so.
		{"emoji", append([]string{"--protocol", "grpc"}, app("emoji")...)},
		// Voting's port admits every client with a mesh identity, and only them.
		{"voting", append([]string{"--default-inbound-policy", "all-unauthenticated", "--require-identity"}, app("voting", "--fail-rate", "0")...)},
		{"web", append([]string{"--upstream", "emoji:8080", "--upstream", "voting:8080"}, app("web", "--emoji-addr", "$EMOJI_ADDR", "--voting-addr", "$VOTING_ADDR")...)},
		// Traffic serves /healthz only: the host's probe of it passes.
		{"traffic", append([]string{"--upstream", "web:8080", "--default-inbound-policy", "all-authenticated", "--probe-path", "/healthz"},
			app("traffic", "--web-url", "http://$WEB_ADDR", "--rps", "10")...)},
	} {
		r := startTrellis(t, -1, nil, append([]string{"--data-dir", dataDir, "run", "--name", w.name, "--port", "8080"}, w.args...)...)
		r.waitOutput(t, regexp.MustCompile(w.name+`-0: started`), 20*time.Second)
	}
	pods := map[string]workload{}
	for deadline := time.Now().Add(20 * time.Second); len(pods) < 4; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("registered: %v, want emoji, voting, web and traffic", pods)
		}
		for name, w := range workloads(t, dataDir) {
			if w.Spec.Address != "" {
				pods[strings.TrimSuffix(name, "-0")] = w
			}
		}
	}
	vip := func(svc string) string {
		out, err := exec.Command(trellisBin, "--data-dir", dataDir, "get", "svc", svc, "-o", "json").Output()
		var s struct{ Spec struct{ ClusterIP string } }
		if err != nil || json.Unmarshal(out, &s) != nil || s.Spec.ClusterIP == "" {
			t.Fatalf("get svc %s: %v\n%s", svc, err, out)
		}
		return net.JoinHostPort(s.Spec.ClusterIP, "8080")
	}
	pod := func(name string) string { return net.JoinHostPort(pods[name].Spec.Address, "8080") }
	web, emoji := "http://"+vip("web"), vip("emoji")
	const trafficNS = "trellis-default-traffic-0"
	fromTraffic := netnsHTTPClient(trafficNS)
	fromHost := netnsHTTPClient("")

	// What each may do, once the policy is in force.
	for _, tc := range []struct {
		who    string
		client *http.Client
		method string
		url    string
		want   int
	}{
		{"traffic (meshed)", fromTraffic, "GET", web + "/api/list", 200},    // and so web → emoji
		{"traffic (meshed)", fromTraffic, "GET", web + "/api/results", 200}, // and so web → voting
		{"traffic (meshed)", fromTraffic, "POST", web + "/api/vote?choice=:sunflower:", 403},
		{"traffic (meshed)", fromTraffic, "GET", web + "/", 404}, // no route of web-http
		{"the host (not meshed)", fromHost, "GET", "http://" + pod("web") + "/api/list", 403},
		{"the host (not meshed)", fromHost, "GET", "http://" + pod("traffic") + "/", 403}, // all-authenticated
		{"the host's probe", fromHost, "GET", "http://" + pod("traffic") + "/healthz", 200},
	} {
		if got := eventually(func() int { return statusOf(tc.client, tc.method, tc.url) }, tc.want, 10*time.Second); got != tc.want {
			t.Errorf("%s: %s %s: %d, want %d", tc.who, tc.method, tc.url, got, tc.want)
		}
	}
	for _, tc := range []struct {
		who, netns, addr string
		call             func(context.Context, *grpc.ClientConn) error
	}{
		{"traffic → emoji", trafficNS, emoji, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := demov1.NewEmojiClient(c).List(ctx, &demov1.ListRequest{})
			return err
		}},
		{"the host → voting (require identity)", "", pod("voting"), func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := demov1.NewVotingClient(c).Results(ctx, &demov1.ResultsRequest{})
			return err
		}},
	} {
		if err := grpcFrom(t, tc.netns, tc.addr, tc.call); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PERMISSION_DENIED", tc.who, err)
		}
	}
	admin := func(name string) string {
		return "http://" + net.JoinHostPort(pods[name].Spec.Address, strconv.Itoa(pods[name].Spec.AdminPort)) + "/metrics"
	}
	m := metricstest.Scrape(t, admin("emoji"))
	if n := m.Sum("inbound_http_authz_allow_total", map[string]string{"srv_name": "emoji-grpc", "authz_name": "emoji-from-web"}); n < 1 {
		t.Error("emoji's proxy counted no call allowed by emoji-from-web")
	}
	if n := m.Sum("inbound_http_authz_deny_total", map[string]string{"srv_name": "emoji-grpc"}); n < 1 {
		t.Error("emoji's proxy counted no call denied")
	}
	if n := metricstest.Scrape(t, admin("traffic")).Sum("inbound_http_authz_allow_total", map[string]string{"authz_kind": "default", "authz_name": "probe"}); n < 1 {
		t.Error("traffic's proxy counted no probe allowed")
	}
	if t.Failed() {
		return
	}

	// Policy changes under load: web's reads from traffic never fail.
	var sent, failed atomic.Int64
	ctx, stopLoad := context.WithCancel(context.Background())
	var load sync.WaitGroup
	defer load.Wait()
	defer stopLoad()
	for range 4 {
		load.Add(1)
		go func() {
			defer load.Done()
			c := netnsHTTPClient(trafficNS)
			for ctx.Err() == nil {
				sent.Add(1)
				if s := statusOf(c, "GET", web+"/api/list"); s != 200 && failed.Add(1) <= 5 {
					t.Logf("GET /api/list under load: %d", s)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	changed := func(what, manifest string, took func() bool) {
		t.Helper()
		applyManifest(t, dataDir, manifest)
		start := time.Now()
		for !took() {
			if time.Since(start) > 5*time.Second { // (~100 ms unloaded: the figure is logged)
				t.Fatalf("%s: not in force 5s after trellis apply", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("%s: in force %v after trellis apply", what, time.Since(start).Round(time.Millisecond))
	}
	changed("web-http in audit", strings.Replace(demoPolicy[:strings.Index(demoPolicy, "---\napiVersion: gateway")], "proxyProtocol: HTTP/1}", "proxyProtocol: HTTP/1, accessPolicy: audit}", 1),
		func() bool { return statusOf(fromTraffic, "POST", web+"/api/vote?choice=:sunflower:") == 200 })
	changed("emoji from traffic too", `apiVersion: policy.trellis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: emoji-from-traffic, namespace: default}
spec:
  targetRef: {group: policy.trellis.dev, kind: Server, name: emoji-grpc}
  requiredAuthenticationRefs: [{group: policy.trellis.dev, kind: MeshTLSAuthentication, name: meshed}]
`, func() bool {
		return grpcFrom(t, trafficNS, emoji, func(ctx context.Context, c *grpc.ClientConn) error {
			_, err := demov1.NewEmojiClient(c).List(ctx, &demov1.ListRequest{})
			return err
		}) == nil
	})
	time.Sleep(time.Second)
	stopLoad()
	load.Wait()
	t.Logf("under load: %d requests, %d failed", sent.Load(), failed.Load())
	if failed.Load() > 0 || sent.Load() < 50 {
		t.Errorf("under load while the policy changed: %d of %d requests failed (want 0 of at least 50)", failed.Load(), sent.Load())
	}
	m = metricstest.Scrape(t, admin("web"))
	if n := m.Sum("inbound_http_authz_allow_total", map[string]string{"srv_name": "web-http", "route_name": "web-vote", "authz_kind": "audit"}); n < 1 {
		t.Error("web's proxy counted no vote let through by audit")
	}

	t.Run("egress", func(t *testing.T) { testEgress(t, dataDir, "trellis-default-web-0", admin("web")) })

	// The CLI's view of it: what web's Server and authorizations let
	// through and what the audit would have denied (the traffic
	// generator's votes), per second.
	views := []struct {
		args []string
		want *regexp.Regexp
	}{
		{[]string{"authz", "web", "-t", "30s"}, regexp.MustCompile(`(?m)^web-http .* web-read +web-read-meshed .* [0-9.]+rps$`)},
		{[]string{"authz", "web", "-t", "30s"}, regexp.MustCompile(`(?m)^web-http .* web-vote +\[AUDIT: would deny\] +- +[0-9.]+rps$`)},
		{[]string{"stat", "srv", "-t", "30s"}, regexp.MustCompile(`(?m)^web-http +1 +[0-9.]+rps +`)},
		// And what the proxies decided, request by request.
		{[]string{"explain", "web", "--direction", "inbound", "--path", "/api/vote", "--limit", "1"},
			regexp.MustCompile(`policy +let through by audit on Server web-http, route web-vote: it would be denied, no authorization policy`)},
		{[]string{"explain", "emoji", "--direction", "inbound", "--limit", "1"},
			regexp.MustCompile(`client +\S+ spiffe://cluster.local/ns/default/sa/(web|traffic)\n.*policy +allowed on Server emoji-grpc by emoji-from-(web|traffic)`)},
		{[]string{"explain", "web", "--direction", "outbound", "--to", "emoji", "--limit", "1"},
			regexp.MustCompile(`outbound +POST emoji\.default\.svc\.cluster\.local:8080/\S+ +200\n.*attempt 1 +\S+ → 200`)},
	}
	for _, v := range views {
		var out []byte
		for deadline := time.Now().Add(15 * time.Second); !v.want.Match(out) && time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			out, _ = exec.Command(trellisBin, append([]string{"--data-dir", dataDir}, v.args...)...).CombinedOutput()
		}
		if !v.want.Match(out) {
			t.Errorf("trellis %s: no line matching %s:\n%s", strings.Join(v.args, " "), v.want, out)
		}
	}
}

// testEgress has a meshed workload (the test's sockets in its namespace)
// reach a plaintext and a TLS server on the host, outside the mesh, then
// applies an EgressNetwork that denies the host.
func testEgress(t *testing.T, dataDir, netns, metricsURL string) {
	gateway := bridgeGateway(t, dataDir)
	outside := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "outside\n") }))
	ln, err := net.Listen("tcp", net.JoinHostPort(gateway, "0"))
	if err != nil {
		t.Fatal(err)
	}
	outside.Listener = ln
	outside.Start()
	defer outside.Close()
	secure := httptest.NewUnstartedServer(outside.Config.Handler)
	if secure.Listener, err = net.Listen("tcp", net.JoinHostPort(gateway, "0")); err != nil {
		t.Fatal(err)
	}
	secure.StartTLS()
	defer secure.Close()

	c := netnsHTTPClient(netns)
	get := func() int {
		req, _ := http.NewRequest("GET", outside.URL+"/", nil)
		req.Host = "api.outside.test"
		return statusOfRequest(c, req)
	}
	handshake := func() bool {
		d := &NetNSDialer{NetNS: netns, Dialer: net.Dialer{Timeout: 2 * time.Second}}
		raw, err := d.DialContext(context.Background(), "tcp", secure.Listener.Addr().String())
		if err != nil {
			return false
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(2 * time.Second))
		return tls.Client(raw, &tls.Config{ServerName: "secure.outside.test", InsecureSkipVerify: true}).Handshake() == nil
	}
	if s := get(); s != 200 || !handshake() {
		t.Fatalf("before any EgressNetwork: HTTP %d, TLS handshake %v; want 200 and a handshake", s, handshake())
	}
	applyManifest(t, dataDir, fmt.Sprintf("apiVersion: policy.trellis.dev/v1alpha1\nkind: EgressNetwork\nmetadata: {name: not-the-host, namespace: default}\n"+
		"spec: {networks: [{cidr: %s/32}], trafficPolicy: Deny}\n", gateway))
	if s := eventually(get, 403, 5*time.Second); s != 403 || handshake() {
		t.Fatalf("after EgressNetwork not-the-host: HTTP %d, TLS handshake %v; want 403 and none", s, handshake())
	}
	m := metricstest.Scrape(t, metricsURL)
	for _, tc := range []struct {
		family, hostname, result string
	}{
		{"outbound_http_egress_total", "api.outside.test", "allowed"},
		{"outbound_http_egress_total", "api.outside.test", "denied"},
		{"outbound_tcp_egress_total", "secure.outside.test", "allowed"},
		{"outbound_tcp_egress_total", "secure.outside.test", "denied"},
	} {
		if n := m.Sum(tc.family, map[string]string{"hostname": tc.hostname, "result": tc.result}); n < 1 {
			t.Errorf("%s{hostname=%q, result=%q} = %v, want at least 1", tc.family, tc.hostname, tc.result, n)
		}
	}
}

// bridgeGateway is the host's address on the control plane's bridge.
func bridgeGateway(t *testing.T, dataDir string) string {
	out, err := exec.Command(trellisBin, "--data-dir", dataDir, "status", "-o", "json").Output()
	var st struct{ Gateway string }
	if err != nil || json.Unmarshal(out, &st) != nil || st.Gateway == "" {
		t.Fatalf("trellis status -o json: %v\n%s", err, out)
	}
	return st.Gateway
}

// applyManifest runs trellis apply with manifest.
func applyManifest(t *testing.T, dataDir, manifest string) {
	t.Helper()
	cmd := exec.Command(trellisBin, "--data-dir", dataDir, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("trellis apply: %v\n%s", err, out)
	}
}

// netnsHTTPClient makes HTTP requests from inside netns ("" the host's).
func netnsHTTPClient(netns string) *http.Client {
	d := &NetNSDialer{NetNS: netns, Dialer: net.Dialer{Timeout: 2 * time.Second}}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// statusOf is the status of a request, 0 if none came.
func statusOf(c *http.Client, method, url string) int {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0
	}
	return statusOfRequest(c, req)
}

// statusOfRequest is the status of req's response, 0 if none came.
func statusOfRequest(c *http.Client, req *http.Request) int {
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// eventually calls f until it returns want or within passes, and returns
// its last answer.
func eventually(f func() int, want int, within time.Duration) int {
	got := f()
	for deadline := time.Now().Add(within); got != want && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = f()
	}
	return got
}

// grpcFrom makes a gRPC call from inside netns ("" the host's) to addr.
func grpcFrom(t *testing.T, netns, addr string, call func(context.Context, *grpc.ClientConn) error) error {
	d := &NetNSDialer{NetNS: netns, Dialer: net.Dialer{Timeout: 2 * time.Second}}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return call(ctx, conn)
}
