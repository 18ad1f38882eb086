package app_test

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/proxytest"
)

// A client may hold at most --max-connections-per-source inbound
// connections at once, and the listener --max-connections: one over is
// closed as accepted and counted, while other clients are still served,
// and a freed slot is taken again.
func TestConnectionLimits(t *testing.T) {
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Serve(ln)
	t.Cleanup(func() { app.Close() })
	cfg := proxytest.Config(t)
	cfg.AppAddr = ln.Addr().String()
	cfg.MaxConnections, cfg.MaxConnectionsPerSource = 6, 3
	p := proxytest.Start(t, cfg)
	addr := p.InboundAddr.String()

	dialFrom := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// refused reports whether the proxy closed c without a word.
	refused := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}
	get := func(src string) error {
		c := dialFrom(src)
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"); err != nil {
			return err
		}
		b, err := io.ReadAll(c)
		if err != nil || len(b) == 0 {
			return io.ErrUnexpectedEOF
		}
		return nil
	}

	var held []net.Conn
	for range 3 {
		held = append(held, dialFrom("127.0.0.1"))
	}
	if c := dialFrom("127.0.0.1"); !refused(c) {
		t.Fatal("a fourth connection from one client was served")
	}
	if err := get("127.0.0.2"); err != nil {
		t.Fatalf("another client was not served: %v", err)
	}
	for _, src := range []string{"127.0.0.3", "127.0.0.3", "127.0.0.4"} {
		held = append(held, dialFrom(src))
	}
	if c := dialFrom("127.0.0.5"); !refused(c) {
		t.Fatal("a seventh connection to the listener was served")
	}
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for get("127.0.0.1") != nil {
		if time.Now().After(deadline) {
			t.Fatal("a freed slot was never taken again")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := scrape(t, p.AdminAddr.String()).Sum("inbound_connections_refused_total", nil); n < 2 {
		t.Errorf("inbound_connections_refused_total = %v, want at least 2", n)
	}
}

// Nobody on the network can hold the admin server's connections open: a
// client gets at most 64 at once (one more is closed as accepted and
// counted), while others — the kubelet's probes, a scraper — are served.
func TestAdminConnectionsAreBounded(t *testing.T) {
	p := proxytest.Start(t, proxytest.Config(t))
	admin := p.AdminAddr.String()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	dial := func() net.Conn {
		t.Helper()
		c, err := d.Dial("tcp", admin)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for range 64 {
		dial()
	}
	c := dial()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a 65th idle connection from one client was kept (read: %v)", err)
	}
	resp, err := http.Get("http://" + admin + "/live")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("another client's probe: %v %v", resp, err)
	}
	resp.Body.Close()
	if n := scrape(t, admin).Sum("admin_connections_refused_total", nil); n != 1 {
		t.Errorf("admin_connections_refused_total = %v, want 1", n)
	}
}
