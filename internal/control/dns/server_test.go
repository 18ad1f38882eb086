package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// serve starts a Server on a random local port; cleanup stops it.
func serve(t *testing.T) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", Config{Resolver: testServices})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// goResolver is Go's own DNS client, sending every query to addr over network.
func goResolver(network, addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

func TestGoResolver(t *testing.T) {
	s := serve(t)
	for _, network := range []string{"udp", "tcp"} {
		r := goResolver(network, s.Addr().String())
		tests := []struct {
			host     string
			want     []string // nil: an error
			notFound bool     // the error is "no such host"
		}{
			{host: emoji, want: []string{"10.96.0.10"}},
			{host: "Emoji.Default.Svc.Cluster.Local.", want: []string{"10.96.0.10"}},
			{host: "web.shop.svc.cluster.local.", want: []string{"10.96.0.11"}},
			{host: "v6.default.svc.cluster.local.", want: []string{"fd00::12"}},
			{host: "nope.default.svc.cluster.local.", notFound: true},
			{host: "default.svc.cluster.local.", notFound: true},
			{host: "example.com."},
		}
		for _, tt := range tests {
			t.Run(network+"/"+tt.host, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				got, err := r.LookupHost(ctx, tt.host)
				if tt.want != nil {
					if err != nil || !slices.Equal(got, tt.want) {
						t.Errorf("LookupHost = %v, %v; want %v", got, err, tt.want)
					}
					return
				}
				var de *net.DNSError
				if !errors.As(err, &de) || de.IsNotFound != tt.notFound {
					t.Errorf("LookupHost = %v, %#v; want a DNSError with IsNotFound %v", got, err, tt.notFound)
				}
			})
		}
	}
}

// exchange sends queries over one TCP connection, all before reading the
// replies, and returns the replies.
func exchange(t *testing.T, c net.Conn, queries ...[]byte) []dnsmessage.Message {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, q := range queries {
		out = binary.BigEndian.AppendUint16(out, uint16(len(q)))
		out = append(out, q...)
	}
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	var replies []dnsmessage.Message
	for range queries {
		var size [2]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			t.Fatal(err)
		}
		msg := make([]byte, binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			t.Fatal(err)
		}
		var m dnsmessage.Message
		if err := m.Unpack(msg); err != nil {
			t.Fatal(err)
		}
		replies = append(replies, m)
	}
	return replies
}

func TestTCPSeveralQueries(t *testing.T) {
	s := serve(t)
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for round := range 2 {
		replies := exchange(t, c,
			query{id: 1, names: []string{emoji}}.pack(t),
			query{id: 2, names: []string{"nope.default.svc.cluster.local."}, edns: 1232}.pack(t),
			query{id: 3, names: []string{"example.com."}}.pack(t),
		)
		for i, want := range []dnsmessage.RCode{dnsmessage.RCodeSuccess, dnsmessage.RCodeNameError, dnsmessage.RCodeRefused} {
			if h := replies[i].Header; h.ID != uint16(i+1) || h.RCode != want {
				t.Errorf("round %d reply %d: header %+v; want ID %d, %v", round, i, h, i+1, want)
			}
		}
	}
	// A message that is not DNS ends the connection.
	if _, err := c.Write([]byte{0, 3, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("read %d bytes after garbage; want the connection closed", n)
	}
}

func TestUDPEDNS(t *testing.T) {
	s := serve(t)
	c, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(query{id: 77, names: []string{emoji}, edns: 4096}.pack(t)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if m.Header.ID != 77 || len(m.Answers) != 1 || len(m.Additionals) != 1 || m.Additionals[0].Header.Type != dnsmessage.TypeOPT {
		t.Errorf("reply %+v; want ID 77, one answer, OPT", m)
	}
}

func TestListenErrors(t *testing.T) {
	s := serve(t)
	addr := s.Addr().String()
	if _, err := Listen(addr, Config{Resolver: testServices}); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Listen on a used address: %v; want an error naming %s", err, addr)
	}
	if _, err := Listen("127.0.0.1:0", Config{}); err == nil {
		t.Error("Listen without a Resolver succeeded")
	}
	if _, err := Listen("no-port", Config{Resolver: testServices}); err == nil || !strings.Contains(err.Error(), "no-port") {
		t.Errorf("Listen on a bad address: %v", err)
	}
}

// settle waits for the goroutine count to drop to at most n.
func settle(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServeStops(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := Listen("127.0.0.1:0", Config{Resolver: testServices})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	if got, err := goResolver("udp", addr).LookupHost(ctx, emoji); err != nil || len(got) != 1 {
		t.Fatalf("LookupHost = %v, %v", got, err)
	}
	// An idle TCP connection, and one stopped halfway through a query, must
	// not hold Serve up.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	exchange(t, idle, query{id: 1, names: []string{emoji}}.pack(t))
	half, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	if _, err := half.Write([]byte{0, 40, 1}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the server read it

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v; want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve still running 2s after ctx ended")
	}
	t.Logf("Serve returned %v after cancel", time.Since(start))
	if err := s.Serve(context.Background()); err == nil {
		t.Error("second Serve succeeded")
	}
	// The sockets are closed: the server's connections are gone and the
	// address can be bound again.
	if err := idle.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection read: %v; want EOF", err)
	}
	again, err := Listen(addr, Config{Resolver: testServices})
	if err != nil {
		t.Fatalf("listen again: %v", err)
	}
	if err := again.Close(); err != nil {
		t.Error(err)
	}
	idle.Close()
	half.Close()
	settle(t, before)
}

func TestCloseStopsServe(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := Listen("127.0.0.1:0", Config{Resolver: testServices})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve still running 2s after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	settle(t, before)
}
