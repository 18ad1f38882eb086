package plane

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/metricstest"
	"github.com/trellis-mesh/trellis/internal/proxy/app"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// emojiAndCallers starts a plane, emoji (an instance labelled app=emoji
// behind its proxy) and the proxies of two callers, web and other, each
// with an upstream port to emoji: it returns the plane's API, emoji's
// proxy, emoji's application port and the callers' URLs.
func emojiAndCallers(t *testing.T) (*localapi.Client, *app.Proxy, string, map[string]string, map[string]*app.Proxy) {
	t.Helper()
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
	callers, proxies := map[string]string{}, map[string]*app.Proxy{}
	for _, sa := range []string{"web", "other"} {
		local := testkit.FreeAddr(t)
		_, lport, _ := net.SplitHostPort(local)
		proxies[sa], _ = proxy(t, p, api, sa, "--upstream=emoji="+lport+":emoji.default.svc.cluster.local:8080")
		callers[sa] = "http://" + local + "/"
	}
	return api, emoji, appPort, callers, proxies
}

// Who may call a workload follows the policy resources, as the control
// plane streams them to its proxy: a Server of emoji's port with one
// AuthorizationPolicy lets web in and keeps other out (403); in audit mode
// other gets through, counted; each change is in force within a second,
// and fails none of web's calls meanwhile.
func TestAuthorizationPolicy(t *testing.T) {
	api, emoji, appPort, callers, _ := emojiAndCallers(t)
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
				time.Sleep(300 * time.Millisecond) // the state holds a while under web's load
				return
			}
			if time.Since(start) > limit {
				t.Fatalf("after %v: web %d (want %d), other %d (want %d)", limit, w, web, o, other)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	within(5*time.Second, 200, 200) // no Server: the default policy lets everyone in
	// web is allowed in every state below: under a steady load of its
	// calls, no policy change may fail one.
	stopLoad, loadDone := make(chan struct{}), make(chan struct{})
	var webCalls, webFailed int
	go func() {
		defer close(loadDone)
		for {
			select {
			case <-stopLoad:
				return
			case <-time.After(5 * time.Millisecond):
			}
			webCalls++
			if status("web") != 200 {
				webFailed++
			}
		}
	}()
	defer func() {
		close(stopLoad)
		<-loadDone
		t.Logf("web's calls during the changes: %d, failed %d", webCalls, webFailed)
		if webFailed > 0 || webCalls < 50 {
			t.Errorf("web's calls during the policy changes: %d failed of %d", webFailed, webCalls)
		}
	}()

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
	within(5*time.Second, 200, 403)
	apply(t, api, server("audit"))
	within(5*time.Second, 200, 200)
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
	within(5*time.Second, 200, 200)
}

// A Server's rate limit of 20 requests a second per identity, under 100 a
// second from web for 5 s: web's 429s are the excess (less the one-second
// burst) within 10 %, with Retry-After; other, at 10 a second, is never
// limited; a gRPC call over the limit gets RESOURCE_EXHAUSTED.
func TestRateLimitPerIdentity(t *testing.T) {
	api, emoji, appPort, callers, _ := emojiAndCallers(t)
	apply(t, api,
		fmt.Sprintf("apiVersion: policy.trellis.dev/v1alpha1\nkind: Server\nmetadata: {name: emoji-http, namespace: default}\n"+
			"spec: {podSelector: {matchLabels: {app: emoji}}, port: %s}\n", appPort),
		"apiVersion: policy.trellis.dev/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {name: meshed, namespace: default}\nspec: {identities: ['*']}\n",
		"apiVersion: policy.trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: emoji-meshed, namespace: default}\n"+
			"spec: {targetRef: {group: policy.trellis.dev, kind: Server, name: emoji-http}, "+
			"requiredAuthenticationRefs: [{group: policy.trellis.dev, kind: MeshTLSAuthentication, name: meshed}]}\n",
		"apiVersion: policy.trellis.dev/v1alpha1\nkind: HTTPLocalRateLimitPolicy\nmetadata: {name: emoji-limit, namespace: default}\n"+
			"spec: {targetRef: {group: policy.trellis.dev, kind: Server, name: emoji-http}, identity: {requestsPerSecond: 20}}\n")
	untilLimited(t, callers["web"])
	time.Sleep(1500 * time.Millisecond) // web's burst allowance refills

	const duration = 5 * time.Second
	var other map[int]int
	done := make(chan struct{})
	go func() { other, _ = statusesAt(callers["other"], 10, duration); close(done) }()
	web, retryAfter := statusesAt(callers["web"], 100, duration)
	<-done
	sent := web[200] + web[429]
	excess := float64(sent) - 20*duration.Seconds() - 20 // the limit, and its one-second burst
	t.Logf("web: %v (%d sent, excess %.0f), Retry-After %q; other: %v", web, sent, excess, retryAfter, other)
	if web[0] > 0 || math.Abs(float64(web[429])-excess) > 0.1*excess {
		t.Errorf("web: %d answered 429, want the excess %.0f ± 10 %%", web[429], excess)
	}
	if retryAfter != "1" {
		t.Errorf("Retry-After %q, want 1", retryAfter)
	}
	if other[429] > 0 || other[0] > 0 {
		t.Errorf("other was limited: %v", other)
	}
	m := metricstest.Scrape(t, "http://"+emoji.AdminAddr.String()+"/metrics")
	if n := m.Sum("inbound_http_local_ratelimit_total", map[string]string{"srv_name": "emoji-http", "ratelimit_name": "emoji-limit", "ratelimit_scope": "identity"}); n < float64(web[429]) {
		t.Errorf("inbound_http_local_ratelimit_total = %v, want at least %d", n, web[429])
	}

	grpcExhausted(t, callers["web"])
}

// grpcExhausted makes 60 gRPC calls through url at once: one over the
// limit gets RESOURCE_EXHAUSTED.
func grpcExhausted(t *testing.T, url string) {
	t.Helper()
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &h2c}}
	for i := range 60 {
		req, _ := http.NewRequest("POST", url+"pkg.Svc/Call", strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Content-Type", "application/grpc")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if s := resp.Header.Get("Grpc-Status") + resp.Trailer.Get("Grpc-Status"); s == "8" {
			return
		} else if i == 59 {
			t.Fatalf("60 gRPC calls at once: the last got grpc-status %q, want 8 (RESOURCE_EXHAUSTED)", s)
		}
	}
}

// untilLimited sends bursts of 30 GETs to url until one gets a 429: a
// rate limit is in force.
func untilLimited(t *testing.T, url string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		limited := false
		for range 30 {
			if resp, err := http.Get(url); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				limited = limited || resp.StatusCode == 429
			}
		}
		if limited {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the rate limit never came into force")
		}
	}
}

// statusesAt sends GETs to url at rps for d and counts their statuses (0: no
// answer), with the Retry-After of a 429.
func statusesAt(url string, rps int, d time.Duration) (codes map[int]int, retryAfter string) {
	codes = map[int]int{}
	tick := time.NewTicker(time.Second / time.Duration(rps))
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		resp, err := http.Get(url)
		if err != nil {
			codes[0]++
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 {
			retryAfter = resp.Header.Get("Retry-After")
		}
	}
	return codes, retryAfter
}

// A limit on a Service is each caller's, enforced at the caller's own
// proxy: web at 100 a second is held to the total of 30 (its 429s are the
// excess less the one-second burst, within 10 %), other to its override
// of 5, each counted by its own proxy; emoji's proxy refuses nothing; a
// gRPC call over the limit gets RESOURCE_EXHAUSTED.
func TestClientRateLimit(t *testing.T) {
	api, emoji, _, callers, proxies := emojiAndCallers(t)
	apply(t, api, "apiVersion: policy.trellis.dev/v1alpha1\nkind: HTTPLocalRateLimitPolicy\nmetadata: {name: emoji-callers, namespace: default}\n"+
		"spec: {targetRef: {kind: Service, name: emoji}, total: {requestsPerSecond: 30}, overrides: [{requestsPerSecond: 5, clientRefs: [{kind: ServiceAccount, name: other}]}]}\n")
	untilLimited(t, callers["web"])
	untilLimited(t, callers["other"])
	time.Sleep(1500 * time.Millisecond) // the burst allowances refill

	const duration = 4 * time.Second
	var other map[int]int
	done := make(chan struct{})
	go func() { other, _ = statusesAt(callers["other"], 10, duration); close(done) }()
	web, retryAfter := statusesAt(callers["web"], 100, duration)
	<-done
	t.Logf("web: %v, Retry-After %q; other: %v", web, retryAfter, other)
	for _, tc := range []struct {
		sa    string
		codes map[int]int
		limit int
	}{{"web", web, 30}, {"other", other, 5}} {
		sent := tc.codes[200] + tc.codes[429]
		excess := float64(sent) - float64(tc.limit)*(duration.Seconds()+1) // the limit, and its one-second burst
		// ± 10 %, at least 4: the last request may land a few hundred
		// milliseconds late on a loaded machine, with tokens refilled.
		if tol := max(0.1*excess, 4); tc.codes[0] > 0 || math.Abs(float64(tc.codes[429])-excess) > tol {
			t.Errorf("%s: %d answered 429 of %d, want the excess %.0f ± %.0f", tc.sa, tc.codes[429], sent, excess, tol)
		}
		m := metricstest.Scrape(t, "http://"+proxies[tc.sa].AdminAddr.String()+"/metrics")
		if n := m.Sum("outbound_http_local_ratelimit_total", map[string]string{"ratelimit_name": "default/emoji-callers", "dst_service": "emoji"}); n < float64(tc.codes[429]) {
			t.Errorf("%s's outbound_http_local_ratelimit_total = %v, want at least %d", tc.sa, n, tc.codes[429])
		}
	}
	if retryAfter != "1" {
		t.Errorf("Retry-After %q, want 1", retryAfter)
	}
	if n := metricstest.Scrape(t, "http://"+emoji.AdminAddr.String()+"/metrics").Sum("inbound_http_local_ratelimit_total", nil); n > 0 {
		t.Errorf("emoji's proxy refused %v requests itself", n)
	}
	grpcExhausted(t, callers["other"])
}

// Routes attached to a Server authorize per route: anyone meshed may GET
// /api/list, only web (by the Server's own policy) may call /api/vote, and
// a path no route matches gets 404.
func TestRouteAuthorization(t *testing.T) {
	api, emoji, appPort, callers, _ := emojiAndCallers(t)
	route := func(name, method, path string) string {
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: %s, namespace: default}\n"+
			"spec:\n  parentRefs: [{group: policy.trellis.dev, kind: Server, name: emoji-http}]\n"+
			"  rules: [{matches: [{method: %s, path: {type: Exact, value: %s}}]}]\n", name, method, path)
	}
	authz := func(name, targetKind, targetGroup, target, auth string) string {
		return fmt.Sprintf("apiVersion: policy.trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: %s, namespace: default}\n"+
			"spec: {targetRef: {group: %s, kind: %s, name: %s}, requiredAuthenticationRefs: [{group: policy.trellis.dev, kind: MeshTLSAuthentication, name: %s}]}\n",
			name, targetGroup, targetKind, target, auth)
	}
	apply(t, api,
		fmt.Sprintf("apiVersion: policy.trellis.dev/v1alpha1\nkind: Server\nmetadata: {name: emoji-http, namespace: default}\n"+
			"spec: {podSelector: {matchLabels: {app: emoji}}, port: %s}\n", appPort),
		"apiVersion: policy.trellis.dev/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {name: web-only, namespace: default}\nspec: {identities: [spiffe://cluster.local/ns/default/sa/web]}\n",
		"apiVersion: policy.trellis.dev/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {name: meshed, namespace: default}\nspec: {identities: ['*']}\n",
		route("list", "GET", "/api/list"), route("vote", "POST", "/api/vote"),
		authz("emoji-from-web", "Server", "policy.trellis.dev", "emoji-http", "web-only"),
		authz("list-from-meshed", "HTTPRoute", "gateway.networking.k8s.io", "list", "meshed"))
	for _, tc := range []struct {
		sa, method, path string
		want             int
	}{
		{"other", "POST", "/api/vote", 403}, // first: the policy is then in force
		{"other", "GET", "/api/list", 200},
		{"web", "POST", "/api/vote", 200},
		{"web", "GET", "/api/vote", 404},
		{"other", "GET", "/elsewhere", 404},
	} {
		got := 0
		for deadline := time.Now().Add(3 * time.Second); got != tc.want && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			req, _ := http.NewRequest(tc.method, callers[tc.sa]+strings.TrimPrefix(tc.path, "/"), nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				got = resp.StatusCode
			}
		}
		if got != tc.want {
			t.Errorf("%s %s %s: %d, want %d", tc.sa, tc.method, tc.path, got, tc.want)
		}
	}
	m := metricstest.Scrape(t, "http://"+emoji.AdminAddr.String()+"/metrics")
	if n := m.Sum("inbound_http_authz_allow_total", map[string]string{"route_kind": "HTTPRoute", "route_name": "list", "authz_name": "list-from-meshed"}); n < 1 {
		t.Error("no request counted as allowed on route list by list-from-meshed")
	}
	if n := m.Sum("inbound_http_route_not_found_total", map[string]string{"srv_name": "emoji-http"}); n < 1 {
		t.Error("no request counted as matching no route")
	}
}
