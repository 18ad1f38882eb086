package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// controlPlane is a running `trellis-control identity`.
type controlPlane struct {
	*proxyProc
	addr, dataDir string
}

func startIdentity(t *testing.T, leafLifetime time.Duration) *controlPlane {
	t.Helper()
	dir := t.TempDir()
	addr, admin := loopback(freePort(t)), loopback(freePort(t))
	p := startBinary(t, controlBin, "identity", "", admin, "--log-format=text", "identity",
		"--addr="+addr, "--admin-addr="+admin, "--data-dir="+dir, "--leaf-lifetime="+leafLifetime.String())
	t.Cleanup(func() { p.stop(t) })
	return &controlPlane{proxyProc: p, addr: addr, dataDir: dir}
}

// join returns the proxy flags that give it the identity of service
// account sa in namespace e2e, with a join token from the control plane.
func (cp *controlPlane) join(t *testing.T, sa string) (id string, args []string) {
	t.Helper()
	id = "spiffe://cluster.local/ns/e2e/sa/" + sa
	out, err := exec.Command(controlBin, "join-token", "--data-dir="+cp.dataDir, "--identity="+id).Output()
	if err != nil {
		t.Fatalf("join-token: %v", err)
	}
	file := filepath.Join(t.TempDir(), sa+".token")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return id, []string{"--identity=" + id, "--identity-addr=" + cp.addr, "--identity-token-file=" + file,
		"--trust-anchors=" + filepath.Join(cp.dataDir, "trust-anchor.pem")}
}

// meshedPair starts a server-side proxy in front of app and a client-side
// proxy with an upstream port leading to it over mTLS; it returns that port.
func meshedPair(t *testing.T, cp *controlPlane, app string) (entry string, client, server *proxyProc, clientID string) {
	t.Helper()
	serverID, serverArgs := cp.join(t, "server")
	clientID, clientArgs := cp.join(t, "client")
	bIn, bAdmin := freePort(t), loopback(freePort(t))
	server = startProxy(t, "server", "", bAdmin, append([]string{
		"--inbound-addr=" + loopback(bIn), "--outbound-addr=" + loopback(freePort(t)), "--admin-addr=" + bAdmin, "--tap-addr=127.0.0.1:0",
		"--app-addr=" + app, "--log-format=text"}, serverArgs...)...)
	t.Cleanup(func() { server.stop(t) })
	up, aAdmin := freePort(t), loopback(freePort(t))
	client = startProxy(t, "client", "", aAdmin, append([]string{
		"--inbound-addr=" + loopback(freePort(t)), "--outbound-addr=" + loopback(freePort(t)), "--admin-addr=" + aAdmin, "--tap-addr=127.0.0.1:0",
		fmt.Sprintf("--upstream=app=%d:%s@%s", up, app, serverID), "--mesh-port=" + strconv.Itoa(bIn), "--log-format=text"}, clientArgs...)...)
	t.Cleanup(func() { client.stop(t) })
	return loopback(up), client, server, clientID
}

// TestMTLSRotationUnderLoad: leaves live 30 s and are renewed at 70 %, while
// 1,000 requests a second cross two proxies; not one may fail, and every
// request must reach the application with the client's proven identity.
func TestMTLSRotationUnderLoad(t *testing.T) {
	duration := 2 * time.Minute
	if testing.Short() {
		duration = 30 * time.Second
	}
	cp := startIdentity(t, 30*time.Second)
	var wrongID atomic.Int64
	var clientID atomic.Value // set once the client proxy's identity is known
	clientID.Store("")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("L5d-Client-Id") != clientID.Load().(string) {
			wrongID.Add(1)
		}
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	entry, client, server, id := meshedPair(t, cp, app.Listener.Addr().String())
	clientID.Store(id)

	// The load comes from fortio, a real external client, at a constant
	// 1,000 requests a second over 32 keep-alive connections.
	fortio := fortioBin(t)
	report := filepath.Join(t.TempDir(), "fortio.json")
	out, err := exec.Command(fortio, "load", "-quiet", "-qps", "1000", "-c", "32", "-t", duration.String(), "-json", report, "http://"+entry+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("fortio: %v\n%s", err, out)
	}
	res := readFortioReport(t, report, nil)
	ok, failed := res.RetCodes["200"], res.failed()
	t.Logf("fortio: %d requests answered 200, %d otherwise (%v), %.0f rps over %v", ok, failed, res.RetCodes, res.ActualQPS, duration)
	if failed > 0 || res.ActualQPS < 900 {
		t.Fatalf("%d requests failed at %.0f rps; want none at 1,000 rps", failed, res.ActualQPS)
	}
	if n := wrongID.Load(); n > 0 {
		t.Fatalf("%d requests reached the application without the client's identity", n)
	}
	minRotations := 5.0
	if testing.Short() {
		minRotations = 1
	}
	for _, p := range []*proxyProc{client, server} {
		// The count includes the first certificate.
		if n := sumSeries(p.metrics(t), "identity_cert_refresh_total") - 1; n < minRotations {
			t.Errorf("proxy %s rotated its certificate %v times in %v; want at least %v", p.name, n, duration, minRotations)
		}
	}
}

// TestMTLSExpiredLeafIsRefused: a proxy whose certificate has expired
// cannot open mesh connections; once renewed, it can again.
func TestMTLSExpiredLeafIsRefused(t *testing.T) {
	// 3 s leaves, while proxies renew no sooner than 10 s after obtaining
	// one: from 3 s to 10 s both hold an expired certificate.
	cp := startIdentity(t, 3*time.Second)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer app.Close()
	entry, client, _, _ := meshedPair(t, cp, app.Listener.Addr().String())
	// Until the client's certificate has expired (it got it as it started,
	// however long the machine took to start both proxies).
	expiry := time.Unix(int64(sumSeries(client.metrics(t), "identity_cert_expiration_timestamp_seconds")), 0)
	time.Sleep(time.Until(expiry.Add(time.Second)))
	if renewed := time.Unix(int64(sumSeries(client.metrics(t), "identity_cert_expiration_timestamp_seconds")), 0); renewed.After(expiry) {
		t.Fatalf("the client's certificate was renewed (expires %v) before the one expiring %v could be tried", renewed, expiry)
	}
	get := func() (int, string) {
		hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
		resp, err := hc.Get("http://" + entry + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("l5d-proxy-error")
	}
	if status, reason := get(); status != http.StatusBadGateway {
		t.Fatalf("with expired certificates the request got %d %q; want 502", status, reason)
	}
	for waited := 0; !strings.Contains(client.logs.String(), "expired"); waited++ {
		if waited == 20 {
			t.Errorf("the client proxy did not log the expired certificate:\n%s", tail(client.logs.String(), 20))
			break
		}
		time.Sleep(100 * time.Millisecond) // the log arrives through a pipe
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, reason := get()
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after renewal the request still gets %d %q", status, reason)
		}
		time.Sleep(500 * time.Millisecond) // renewal is at 10 s; poll for it
	}
}
