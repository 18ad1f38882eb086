package app_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/proxytest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// bannerServer greets every client first, like SMTP or MySQL, then echoes.
func bannerServer(t *testing.T) string {
	return testkit.Serve(t, func(c net.Conn) {
		io.WriteString(c, "220 trellis.test ESMTP ready\r\n")
		io.Copy(c, c)
	})
}

func port(addr string) uint16 {
	_, p, _ := net.SplitHostPort(addr)
	var n uint16
	fmt.Sscan(p, &n)
	return n
}

// proxyPair starts an inbound proxy for app and an outbound proxy with an
// upstream port leading to it, and returns that port's address.
func proxyPair(t *testing.T, app string, opaque bool) string {
	_, out := proxyPairAddrs(t, app, opaque)
	return out
}

// proxyPairAddrs is proxyPair returning the inbound proxy's address too.
func proxyPairAddrs(t *testing.T, app string, opaque bool) (inbound, outbound string) {
	in := proxytest.Config(t)
	in.AppAddr = app
	if opaque {
		in.OpaquePorts = map[uint16]bool{port(app): true}
	}
	b := proxytest.Start(t, in)
	out := proxytest.Config(t)
	local := port(testkit.FreeAddr(t))
	out.Upstreams = []config.Upstream{{Name: "app", LocalPort: local, Target: b.InboundAddr.String()}}
	if opaque {
		out.OpaquePorts = map[uint16]bool{port(b.InboundAddr.String()): true}
	}
	a := proxytest.Start(t, out)
	return b.InboundAddr.String(), a.UpstreamAddrs["app"].String()
}

func TestServerSpeaksFirst(t *testing.T) {
	app := bannerServer(t)
	for _, tc := range []struct {
		name   string
		opaque bool
		within time.Duration
	}{
		// Not declared opaque: detection notices the server's greeting after
		// the server-first delay (100 ms) at each proxy, far from the 10 s
		// detect timeout.
		{"undeclared port", false, 2 * time.Second},
		// Declared opaque: no detection at all.
		{"opaque port", true, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entry := proxyPair(t, app, tc.opaque)
			start := time.Now()
			c, err := net.Dial("tcp", entry)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(15 * time.Second))
			br := bufio.NewReader(c)
			banner, err := br.ReadString('\n')
			if err != nil || banner != "220 trellis.test ESMTP ready\r\n" {
				t.Fatalf("banner %q, %v", banner, err)
			}
			if took := time.Since(start); took > tc.within {
				t.Fatalf("the greeting took %v through two proxies; want under %v", took, tc.within)
			}
			io.WriteString(c, "EHLO client\r\n")
			if echo, err := br.ReadString('\n'); err != nil || echo != "EHLO client\r\n" {
				t.Fatalf("echo %q, %v", echo, err)
			}
		})
	}
}

func TestGarbageFallsBackToOpaque(t *testing.T) {
	entry := proxyPair(t, testkit.EchoServer(t), false)
	c, err := net.Dial("tcp", entry)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	garbage := []byte("\x00\xffnot a protocol anyone knows\r\n\r\n")
	start := time.Now()
	c.Write(garbage)
	got := make([]byte, len(garbage))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != string(garbage) {
		t.Fatalf("echo %q, %v", got, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("garbage took %v: it should be classified opaque at once, not after the detect timeout", took)
	}
}
