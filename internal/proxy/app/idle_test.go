package app_test

import (
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/proxytest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// cpuTime is the CPU this process has used so far.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Silent clients — connected, sending nothing — to a target that refuses
// connections (inbound: the application's port is closed; outbound: an
// upstream nobody listens on) cost no CPU, and everything they held is
// released when they go.
func TestSilentConnectionsCostNothing(t *testing.T) {
	closedPort := testkit.FreeAddr(t) // nobody listens here
	in := proxytest.Config(t)
	in.AppAddr = closedPort
	in.DetectTimeout = 300 * time.Millisecond
	inbound := proxytest.Start(t, in)
	out := proxytest.Config(t)
	out.DetectTimeout = 300 * time.Millisecond
	out.Upstreams = []config.Upstream{{Name: "nowhere", LocalPort: port(testkit.FreeAddr(t)), Target: closedPort}}
	outbound := proxytest.Start(t, out)

	goroutines, fds := settledGoroutines(), testkit.OpenFDs(t)
	var conns []net.Conn
	for _, addr := range []string{inbound.InboundAddr.String(), outbound.UpstreamAddrs["nowhere"].String()} {
		for range 100 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
	}
	// Past the server-first delay and the detect timeout: every connection
	// has been probed and given up on.
	time.Sleep(time.Second)
	before := cpuTime(t)
	time.Sleep(time.Second)
	if used := cpuTime(t) - before; used > 300*time.Millisecond {
		t.Errorf("200 silent connections used %v of CPU in 1s", used)
	}
	for _, c := range conns {
		c.Close()
	}
	waitGoroutines(t, goroutines)
	testkit.WaitOpenFDs(t, fds+5, 5*time.Second)
}

// A silent connection does not hold a draining proxy for its grace period.
func TestDrainDoesNotWaitForSilentConnections(t *testing.T) {
	app := testkit.EchoServer(t)
	cfg := proxytest.Config(t)
	cfg.AppAddr = app
	p := startStoppable(t, cfg) // 5 s grace period
	c, err := net.Dial("tcp", p.InboundAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(300 * time.Millisecond) // probed: the echo server is silent too
	start := time.Now()
	p.stop(t)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the proxy took %v to drain one silent connection", took)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("the silent client's connection is still open after the drain (%d, %v)", n, err)
	}
}

func settledGoroutines() int {
	time.Sleep(50 * time.Millisecond)
	return runtime.NumGoroutine()
}
