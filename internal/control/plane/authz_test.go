package plane

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/metricstest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// Who may call a workload follows the policy resources, as the control
// plane streams them to its proxy: a Server of emoji's port with one
// AuthorizationPolicy lets web in and keeps other out (403); in audit mode
// other gets through, counted; each change is in force within a second.
func TestAuthorizationPolicy(t *testing.T) {
	p, api := startPlane(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "emoji") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, appPort, _ := net.SplitHostPort(ln.Addr().String())
	emoji, _ := proxy(t, p, api, "emoji", "--app-addr="+ln.Addr().String(), "--workload=emoji-0", "--service=emoji",
		"--service-port=8080="+appPort, "--workload-label=app=emoji")
	waitWorkloads(t, api, 1)
	callers := map[string]string{}
	for _, sa := range []string{"web", "other"} {
		local := testkit.FreeAddr(t)
		_, lport, _ := net.SplitHostPort(local)
		proxy(t, p, api, sa, "--upstream=emoji="+lport+":emoji.default.svc.cluster.local:8080")
		callers[sa] = "http://" + local + "/"
	}
	status := func(sa string) int {
		resp, err := http.Get(callers[sa])
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// within waits until web and other get what they should, and says how long it took.
	within := func(limit time.Duration, web, other int) {
		t.Helper()
		start := time.Now()
		for {
			w, o := status("web"), status("other")
			if w == web && o == other {
				t.Logf("in force after %v", time.Since(start).Round(time.Millisecond))
				return
			}
			if time.Since(start) > limit {
				t.Fatalf("after %v: web %d (want %d), other %d (want %d)", limit, w, web, o, other)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	within(5*time.Second, 200, 200) // no Server: the default policy lets everyone in

	server := func(access string) string {
		return fmt.Sprintf("apiVersion: policy.trellis.dev/v1alpha1\nkind: Server\nmetadata: {name: emoji-http, namespace: default}\n"+
			"spec: {podSelector: {matchLabels: {app: emoji}}, port: %s, accessPolicy: %s}\n", appPort, access)
	}
	apply(t, api, server("deny"),
		"apiVersion: policy.trellis.dev/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {name: web-only, namespace: default}\n"+
			"spec: {identities: [spiffe://cluster.local/ns/default/sa/web]}\n",
		"apiVersion: policy.trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: emoji-from-web, namespace: default}\n"+
			"spec: {targetRef: {group: policy.trellis.dev, kind: Server, name: emoji-http}, "+
			"requiredAuthenticationRefs: [{group: policy.trellis.dev, kind: MeshTLSAuthentication, name: web-only}]}\n")
	within(time.Second, 200, 403)
	apply(t, api, server("audit"))
	within(time.Second, 200, 200)
	m := metricstest.Scrape(t, "http://"+emoji.AdminAddr.String()+"/metrics")
	if n := m.Sum("inbound_http_authz_allow_total", map[string]string{"srv_kind": "server", "srv_name": "emoji-http", "authz_kind": "audit"}); n < 1 {
		t.Errorf("audit let no request through, by the metrics")
	}
	if n := m.Sum("inbound_http_authz_deny_total", map[string]string{"srv_kind": "server", "srv_name": "emoji-http"}); n < 1 {
		t.Errorf("no denied request counted")
	}
	if n := m.Sum("inbound_http_authz_allow_total", map[string]string{"srv_kind": "server", "authz_kind": "authorizationpolicy", "authz_name": "emoji-from-web"}); n < 1 {
		t.Errorf("no request counted as allowed by emoji-from-web")
	}
	apply(t, api, server("deny"), strings.Replace(
		"apiVersion: policy.trellis.dev/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {name: web-only, namespace: default}\nspec: {identities: [spiffe://cluster.local/ns/default/sa/web]}\n",
		"spiffe://cluster.local/ns/default/sa/web", "'spiffe://cluster.local/ns/default/*'", 1))
	within(time.Second, 200, 200)
}
