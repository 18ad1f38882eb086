package app_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/meshtest"
	"github.com/trellis-mesh/trellis/internal/metricstest"
	"github.com/trellis-mesh/trellis/internal/proxy/authz"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/proxytest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// The default inbound policies, as a meshed client (mTLS through its own
// proxy) and an unmeshed one (plaintext to the inbound proxy) see them.
func TestDefaultInboundPolicies(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	app := serveApp(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	loopback, private := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		policy           string
		clusterNetworks  []netip.Prefix
		requireIdentity  bool
		meshed, unmeshed int
	}{
		{authz.AllUnauthenticated, nil, false, 200, 200},
		{authz.AllAuthenticated, nil, false, 200, 403},
		{authz.ClusterAuthenticated, loopback, false, 200, 403},
		{authz.ClusterAuthenticated, private, false, 403, 403},
		{authz.ClusterUnauthenticated, loopback, false, 200, 200},
		{authz.ClusterUnauthenticated, private, false, 403, 403},
		{authz.Deny, loopback, false, 403, 403},
		{authz.Audit, nil, false, 200, 200},
		{authz.AllUnauthenticated, nil, true, 200, 403},
	} {
		name := fmt.Sprintf("%s/%v/require-identity=%v", tc.policy, tc.clusterNetworks, tc.requireIdentity)
		t.Run(name, func(t *testing.T) {
			admin := testkit.FreeAddr(t)
			entry, w, _, _ := meshPairWith(t, ids, app, func(c *config.Config) {
				c.OpaquePorts, c.AdminAddr = nil, admin
				c.Authz = authz.Config{Default: tc.policy, ClusterNetworks: tc.clusterNetworks}
				if tc.requireIdentity {
					c.Authz.RequireIdentity = map[uint16]bool{port(app): true}
				}
			})
			for _, path := range []struct {
				who  string
				addr string
				want int
			}{{"meshed", entry, tc.meshed}, {"unmeshed", w.ln.Addr().String(), tc.unmeshed}} {
				resp, err := http.Get("http://" + path.addr + "/")
				if err != nil {
					t.Fatalf("%s: %v", path.who, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != path.want {
					t.Errorf("%s client: %d %q, want %d", path.who, resp.StatusCode, body, path.want)
				}
				if path.want == 403 && !strings.HasPrefix(resp.Header.Get("L5d-Proxy-Error"), "unauthorized request on port "+strconv.Itoa(int(port(app)))) {
					t.Errorf("%s client: l5d-proxy-error %q", path.who, resp.Header.Get("L5d-Proxy-Error"))
				}
			}
			m := metricstest.Scrape(t, "http://"+admin+"/metrics")
			labels := map[string]string{"srv_kind": "default", "srv_name": tc.policy, "srv_port": strconv.Itoa(int(port(app)))}
			var allowed, denied float64
			for _, s := range []int{tc.meshed, tc.unmeshed} {
				if s == 200 {
					allowed++
				} else {
					denied++
				}
			}
			if got := m.Sum("inbound_http_authz_deny_total", labels); got != denied {
				t.Errorf("inbound_http_authz_deny_total = %v, want %v", got, denied)
			}
			labels["authz_name"] = tc.policy
			if got := m.Sum("inbound_http_authz_allow_total", labels); got != allowed {
				t.Errorf("inbound_http_authz_allow_total = %v, want %v", got, allowed)
			}
		})
	}
}

// A denied gRPC call gets PERMISSION_DENIED; a denied opaque connection is
// closed before it reaches the application, while a meshed client's gets
// through.
func TestDeniedGRPCAndTCP(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	grpcApp := serveApp(t, func(w http.ResponseWriter, r *http.Request) { t.Error("a denied call reached the application") })
	_, w, _, _ := meshPairWith(t, ids, grpcApp, func(c *config.Config) {
		c.OpaquePorts = nil
		c.Authz = authz.Config{Default: authz.AllAuthenticated}
	})
	req, _ := http.NewRequest("POST", "http://"+w.ln.Addr().String()+"/pkg.Svc/Call", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := client(true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "7" {
		t.Errorf("denied gRPC call: %d, grpc-status %q", resp.StatusCode, resp.Header.Get("Grpc-Status"))
	}

	echo := testkit.EchoServer(t)
	entry, w, _, _ := meshPairWith(t, ids, echo, func(c *config.Config) { c.Authz = authz.Config{Default: authz.AllAuthenticated} })
	for _, tc := range []struct {
		who, addr string
		echoed    bool
	}{{"meshed", entry, true}, {"unmeshed", w.ln.Addr().String(), false}} {
		c, err := net.Dial("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		const msg = "\x00not http\x01"
		io.WriteString(c, msg)
		b := make([]byte, len(msg))
		_, err = io.ReadFull(c, b)
		c.Close()
		if echoed := err == nil && string(b) == msg; echoed != tc.echoed {
			t.Errorf("%s TCP client: echoed %v (%v), want %v", tc.who, echoed, err, tc.echoed)
		}
	}
}

// A client that stays silent long enough for the proxy to dial the
// application (to see whether it speaks first) and is then refused leaves
// no connection to the application behind: the early connection closes
// with the refused one.
func TestRefusedConnectionLeavesNoEarlyConnection(t *testing.T) {
	accepted, closed := make(chan struct{}, 1), make(chan struct{}, 1)
	app := testkit.Serve(t, func(c net.Conn) {
		accepted <- struct{}{}
		io.Copy(io.Discard, c)
		closed <- struct{}{}
	})
	cfg := proxytest.Config(t)
	cfg.AppAddr = app
	cfg.Authz = authz.Config{Default: authz.Deny}
	p := proxytest.Start(t, cfg)

	c, err := net.Dial("tcp", p.InboundAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-accepted: // the proxy dialled the application for the silent client
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy never dialled the application for a silent client")
	}
	io.WriteString(c, "\x00not a protocol the proxy knows")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the refused connection did not end: %v", err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy's connection to the application outlived the refused client connection")
	}
}
