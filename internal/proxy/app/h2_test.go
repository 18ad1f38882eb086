package app_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// An upstream's GOAWAY (here: Go's HTTP/2 server answering with
// "Connection: close", as it does on shutdown or at a connection's age
// limit) while a stream is still open ends that connection for new
// requests: they go on a new one, none fails.
func TestUpstreamGoAwayIsInvisible(t *testing.T) {
	var conns atomic.Int64
	slowStarted, othersDone := make(chan struct{}), make(chan struct{})
	var started sync.Once
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/slow": // open until the other requests are answered
				started.Do(func() { close(slowStarted) })
				select {
				case <-othersDone:
				case <-time.After(10 * time.Second):
				}
			case "/bye":
				w.Header().Set("Connection", "close")
			}
			io.WriteString(w, "ok")
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	p := rawProxy(t, serve(t, srv))

	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &h2}, Timeout: 10 * time.Second}
	get := func(path string) (int, error) {
		resp, err := c.Get("http://" + p.InboundAddr.String() + path)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	slow := make(chan error, 1)
	go func() {
		code, err := get("/slow")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		slow <- err
	}()
	select { // /slow is in flight
	case <-slowStarted:
	case err := <-slow:
		t.Fatalf("/slow ended before it reached the upstream: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("/slow never reached the upstream")
	}
	for _, path := range []string{"/bye", "/after", "/after"} {
		if code, err := get(path); err != nil || code != http.StatusOK {
			t.Fatalf("%s: %d %v", path, code, err)
		}
	}
	close(othersDone)
	if err := <-slow; err != nil {
		t.Fatalf("the stream open during the GOAWAY: %v", err)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("the upstream saw %d connections; want 3 (the proxy asking once whether it speaks h2c, one before the GOAWAY, one after)", n)
	}
}
