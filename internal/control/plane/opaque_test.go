package plane

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// A port the service declares opaque is forwarded without protocol
// detection by both proxies: a server-first protocol's greeting arrives at
// once (no server-first probe wait), and HTTP sent to it reaches the
// application byte for byte, not parsed and rewritten as HTTP.
func TestDeclaredOpaquePortIsNotDetected(t *testing.T) {
	p, api := startPlane(t)
	const greeting = "220 greetings from a server-first service\r\n"
	app := testkit.Serve(t, func(c net.Conn) {
		defer c.Close()
		io.WriteString(c, greeting)
		io.Copy(c, c) // then echo
	})
	_, appPort, _ := net.SplitHostPort(app)
	proxy(t, p, api, "greet", "--app-addr="+app, "--workload=greet-0", "--service=greet", "--service-port=2525="+appPort+"/opaque")
	waitWorkloads(t, api, 1)
	local := testkit.FreeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	proxy(t, p, api, "client", "--upstream=greet="+lport+":greet.default.svc.cluster.local:2525")

	var best time.Duration
	for i := range 5 {
		start := time.Now()
		c, err := net.Dial("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		took := time.Since(start)
		if err != nil || line != greeting {
			t.Fatalf("greeting %q, %v", line, err)
		}
		if i == 0 || took < best {
			best = took
		}
		const request = "GET / HTTP/1.1\r\nHost: greet\r\n\r\n"
		io.WriteString(c, request)
		echo := make([]byte, len(request))
		if _, err := io.ReadFull(br, echo); err != nil || string(echo) != request {
			t.Fatalf("HTTP to the opaque port came back as %q (%v); want it byte for byte", echo, err)
		}
		c.Close()
	}
	// The server-first probe waits about 100 ms for the client to speak.
	if best > 50*time.Millisecond {
		t.Errorf("the greeting took at best %v through the proxies: protocol detection waited for the client", best)
	}
}
