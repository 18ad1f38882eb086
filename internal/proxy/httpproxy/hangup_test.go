package httpproxy

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// TestHangupClock: the clock watches only requests still in flight after
// watchAfter, in the order they were armed, a client that hangs up cancels
// its request, and the clock's timer stops once no request is armed (an
// idle proxy is not woken).
func TestHangupClock(t *testing.T) {
	type conn struct {
		w      *hangupWatch
		client net.Conn
		ctx    context.Context
	}
	conns := make([]conn, 3)
	for i := range conns {
		server, client := net.Pipe()
		t.Cleanup(func() { server.Close(); client.Close() })
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		conns[i] = conn{w: &hangupWatch{c: server}, client: client, ctx: ctx}
		conns[i].w.arm(bufio.NewReader(server), cancel)
	}
	conns[1].w.disarm() // a quick request: never watched

	conns[0].client.Close() // this client hangs up mid-request
	select {
	case <-conns[0].ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a client that hung up while its request was in flight did not cancel it")
	}
	// The other request in flight is watched too, by the same tick or, armed
	// a little later, by the next.
	testkit.WaitFor(t, "the other request in flight to be watched", func() bool {
		hangups.mu.Lock()
		defer hangups.mu.Unlock()
		return conns[2].w.done != nil
	})
	conns[0].w.disarm()
	conns[2].w.disarm() // its read is woken and ends: nothing reads the connection now
	if conns[1].ctx.Err() != nil || conns[2].ctx.Err() != nil {
		t.Fatal("a request whose client stayed was cancelled")
	}

	testkit.WaitFor(t, "the clock's timer to stop with nothing armed", func() bool {
		hangups.mu.Lock()
		defer hangups.mu.Unlock()
		return !hangups.running && hangups.head == nil
	})
}
