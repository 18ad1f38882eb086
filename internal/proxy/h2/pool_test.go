package h2

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// Requests arriving together for a key share one connection, dialled
// once; a key whose connections ended is forgotten at the next dial, so
// targets that come and go leave nothing behind.
func TestPoolDialsOnceAndForgetsEndedConnections(t *testing.T) {
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}, nil)
	var dials atomic.Int32
	p := NewPool(func(ctx context.Context, key string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}, ClientConfig{IdleTimeout: 50 * time.Millisecond})
	get := func(key string) {
		t.Helper()
		cc, err := p.Get(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	done := make(chan struct{})
	for range 10 {
		go func() { get("a"); done <- struct{}{} }()
	}
	for range 10 {
		<-done
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("10 requests together dialled %d connections; want 1", n)
	}
	p.mu.Lock()
	cc := p.hosts["a"].conns[0]
	p.mu.Unlock()
	testkit.WaitFor(t, "the connection to idle out", func() bool { return cc.Err() != nil })
	get("b")
	p.mu.Lock()
	_, kept := p.hosts["a"]
	p.mu.Unlock()
	if kept {
		t.Error("a key whose only connection ended is still kept after the next dial")
	}
}
