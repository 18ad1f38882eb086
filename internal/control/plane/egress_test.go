package plane

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/metricstest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// Traffic to a destination outside the mesh leaves until an EgressNetwork
// denies its network (HTTP 403, a connection refused), and again when a
// more specific one in the mesh-wide egress namespace allows it; each
// request is counted by hostname. Clients that use the outbound port as
// their HTTP proxy are held to the same policy, absolute-form requests and
// CONNECT tunnels alike, and so is a destination named by a host name
// (localhost: the address it resolves to decides).
func TestEgressNetworks(t *testing.T) {
	p, api := startPlane(t)
	outside := backend(t, "outside", 0)
	echo := testkit.EchoServer(t)
	httpLocal, tcpLocal := testkit.FreeAddr(t), testkit.FreeAddr(t)
	_, hport, _ := net.SplitHostPort(httpLocal)
	_, tport, _ := net.SplitHostPort(tcpLocal)
	client, _ := proxy(t, p, api, "client", "--upstream=out="+hport+":"+outside, "--upstream=echo="+tport+":"+echo, "--opaque-ports="+portOf(echo))
	get := func() int {
		resp, err := http.Get("http://" + httpLocal + "/")
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	echoes := func() bool {
		c, err := net.DialTimeout("tcp", tcpLocal, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(c, "\x00hi")
		b := make([]byte, 3)
		_, err = io.ReadFull(c, b)
		return err == nil && string(b) == "\x00hi"
	}
	viaProxy := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: client.OutboundAddr.String()})}}
	getViaProxy := func(target string) int {
		resp, err := viaProxy.Get("http://" + target + "/")
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	tunnels := func(target string) bool { // CONNECT through the outbound port
		c, err := net.DialTimeout("tcp", client.OutboundAddr.String(), time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != http.StatusOK {
			return false
		}
		io.WriteString(c, "\x00hi")
		b := make([]byte, 3)
		_, err = io.ReadFull(br, b)
		return err == nil && string(b) == "\x00hi"
	}
	// The guard pins a name to its first address: by name only where that
	// is 127.0.0.1, the backends' (an /etc/hosts may list ::1 first).
	addrs, err := net.DefaultResolver.LookupNetIP(t.Context(), "ip", "localhost")
	byName := err == nil && len(addrs) > 0 && addrs[0].Unmap() == netip.MustParseAddr("127.0.0.1")
	if !byName {
		t.Logf("localhost resolves to %v here: the by-name requests are not tried", addrs)
	}
	expect := func(status int, echoed bool) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			s, e := get(), echoes()
			ps, pe := getViaProxy(outside), tunnels(echo)
			ns, ne := status, echoed // by name, where localhost is this host's 127.0.0.1
			if byName {
				ns, ne = getViaProxy("localhost:"+portOf(outside)), tunnels("localhost:"+portOf(echo))
			}
			if s == status && e == echoed && ps == status && pe == echoed && ns == status && ne == echoed {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("HTTP %d (want %d), TCP echoed %v (want %v); as HTTP proxy: HTTP %d, CONNECT tunnel echoed %v; by name: HTTP %d, CONNECT tunnel echoed %v",
					s, status, e, echoed, ps, pe, ns, ne)
			}
		}
	}
	expect(200, true)
	apply(t, api, "apiVersion: policy.trellis.dev/v1alpha1\nkind: EgressNetwork\nmetadata: {name: no-loopback, namespace: default}\n"+
		"spec: {networks: [{cidr: 127.0.0.0/8}], trafficPolicy: Deny}\n")
	expect(403, false)
	apply(t, api, "apiVersion: policy.trellis.dev/v1alpha1\nkind: EgressNetwork\nmetadata: {name: this-host, namespace: trellis-egress}\n"+
		"spec: {networks: [{cidr: 127.0.0.1/32}], trafficPolicy: Allow}\n")
	expect(200, true)
	m := metricstest.Scrape(t, "http://"+client.AdminAddr.String()+"/metrics")
	for _, tc := range []struct {
		labels map[string]string
		family string
	}{
		{map[string]string{"hostname": "127.0.0.1", "result": "denied", "egress_network": "no-loopback", "egress_namespace": "default"}, "outbound_http_egress_total"},
		{map[string]string{"hostname": "127.0.0.1", "result": "allowed", "egress_network": "this-host", "egress_namespace": "trellis-egress"}, "outbound_http_egress_total"},
		{map[string]string{"result": "denied", "egress_network": "no-loopback"}, "outbound_tcp_egress_total"},
	} {
		if n := m.Sum(tc.family, tc.labels); n < 1 {
			t.Errorf("%s%v = %v, want at least 1", tc.family, tc.labels, n)
		}
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
