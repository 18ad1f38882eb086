package h2

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// tunnelEcho answers a CONNECT and echoes the stream's bytes, half-closing
// when the client did, as a tunnel's far end does.
func tunnelEcho(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
		return
	}
	sw := w.(interface {
		FlushError() error
		CloseWrite() error
	})
	w.WriteHeader(http.StatusOK)
	sw.FlushError()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			sw.FlushError()
		}
		if err != nil {
			break
		}
	}
	sw.CloseWrite()
}

// A CONNECT stream carries bytes both ways, each direction ending on its
// own: the client's CloseWrite reaches the server as the end of the
// request, and the server's end reaches the client as io.EOF.
func TestConnectStreamCarriesBytesAndHalfCloses(t *testing.T) {
	cc := dialClient(t, ourServer(t, &Server{Handler: http.HandlerFunc(tunnelEcho)}, nil), ClientConfig{})
	if err := cc.Reserve(); err != nil {
		t.Fatal(err)
	}
	s, err := cc.Connect(context.Background(), "db:5432")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := make([]byte, 300<<10) // beyond the initial windows
	for i := range msg {
		msg[i] = byte(i)
	}
	go func() {
		s.Write(msg)
		s.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil || len(got) != len(msg) || string(got) != string(msg) {
		t.Fatalf("echoed %d bytes, %v; want the %d sent, then the end", len(got), err, len(msg))
	}
	if n := cc.InFlight(); n != 0 {
		t.Errorf("a stream ended both ways still counts: %d in flight", n)
	}
}

// A server that answers 200 and ends its side at once gives a stream that
// reads the end, not one that breaks the reader.
func TestConnectAnsweredAndEndedReadsTheEnd(t *testing.T) {
	cc := dialClient(t, ourServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}, nil), ClientConfig{})
	cc.Reserve()
	s, err := cc.Connect(context.Background(), "db:5432")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := s.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read = %d, %v; want the end", n, err)
	}
}

// A CONNECT answered otherwise than 2xx fails with the status, and gives
// its stream back.
func TestConnectRefused(t *testing.T) {
	cc := dialClient(t, ourServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusForbidden)
	})}, nil), ClientConfig{})
	cc.Reserve()
	_, err := cc.Connect(context.Background(), "db:5432")
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Status != "403 Forbidden" {
		t.Fatalf("Connect = %v; want a ConnectError with 403", err)
	}
	testkit.WaitFor(t, "the stream to end", func() bool { return cc.InFlight() == 0 })
}

// A caller that gave up before the stream opened opens none: a stream
// opened only to be reset would count towards a rapid-reset flood.
func TestConnectAfterTheCallerGaveUpOpensNothing(t *testing.T) {
	opened := make(chan struct{}, 1)
	cc := dialClient(t, ourServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { opened <- struct{}{} })}, nil), ClientConfig{})
	cc.Reserve()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := cc.Connect(ctx, "db:5432"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Connect = %v; want the caller's cancellation", err)
	}
	select {
	case <-opened:
		t.Fatal("the server saw a stream the caller had given up on")
	case <-time.After(100 * time.Millisecond):
	}
	if err := cc.Reserve(); err != nil { // the reservation was given back
		t.Fatal(err)
	}
}

// MaxStreams keeps a client below the server's stream limit.
func TestClientMaxStreams(t *testing.T) {
	cc := dialClient(t, ourServer(t, &Server{Handler: http.HandlerFunc(tunnelEcho)}, nil), ClientConfig{MaxStreams: 2})
	for i := range 2 {
		if err := cc.Reserve(); err != nil {
			t.Fatalf("reservation %d: %v", i, err)
		}
	}
	if err := cc.Reserve(); !errors.Is(err, ErrConnUnusable) {
		t.Fatalf("a third stream under MaxStreams 2: %v; want ErrConnUnusable", err)
	}
}
