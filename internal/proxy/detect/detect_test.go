package detect

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// upstream is a target whose dial returns the proxy end of a connection and
// the test holds the server end.
type upstream struct {
	dials  int
	server chan net.Conn
}

func (u *upstream) dial(t *testing.T) DialFunc {
	u.server = make(chan net.Conn, 1)
	return func(ctx context.Context) (net.Conn, error) {
		u.dials++
		proxySide, serverSide := pair(t)
		u.server <- serverSide
		return proxySide, nil
	}
}

func TestDetectClientFirstNeverDials(t *testing.T) {
	app, proxySide := pair(t)
	var up upstream
	d := Detector{Timeout: 5 * time.Second, ServerFirstDelay: time.Second}
	go app.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	res, err := d.Detect(context.Background(), proxySide, up.dial(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Protocol != HTTP1 || res.Upstream != nil || up.dials != 0 {
		t.Fatalf("got %v upstream=%v dials=%d; want HTTP1 without an early dial", res.Protocol, res.Upstream != nil, up.dials)
	}
	// Nothing the detector read is lost.
	buf := make([]byte, 3)
	if _, err := io.ReadFull(res.Client, buf); err != nil || string(buf) != "GET" {
		t.Fatalf("replayed %q, %v", buf, err)
	}
}

func TestDetectServerSpeaksFirst(t *testing.T) {
	_, proxySide := pair(t)
	var up upstream
	d := Detector{Timeout: 10 * time.Second, ServerFirstDelay: 50 * time.Millisecond}
	dial := up.dial(t)
	go func() {
		s := <-up.server
		s.Write([]byte("220 mail.example.com ESMTP\r\n"))
	}()
	start := time.Now()
	res, err := d.Detect(context.Background(), proxySide, dial)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("server-first detection took %v; the detect timeout is 10s and must not be waited out", took)
	}
	if !res.ServerFirst || res.Protocol != Opaque || res.Upstream == nil {
		t.Fatalf("got %+v; want server-first opaque with the early upstream", res)
	}
	banner := make([]byte, 4)
	if _, err := io.ReadFull(res.Upstream, banner); err != nil || string(banner) != "220 " {
		t.Fatalf("early upstream replays %q, %v; want the banner", banner, err)
	}
}

func TestDetectSilentBothSidesTimesOut(t *testing.T) {
	_, proxySide := pair(t)
	var up upstream
	d := Detector{Timeout: 300 * time.Millisecond, ServerFirstDelay: 50 * time.Millisecond}
	res, err := d.Detect(context.Background(), proxySide, up.dial(t))
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || res.Protocol != Opaque {
		t.Fatalf("got %+v; want an opaque timeout", res)
	}
}

func TestDetectLateClientKeepsEarlyUpstream(t *testing.T) {
	app, proxySide := pair(t)
	var up upstream
	d := Detector{Timeout: 5 * time.Second, ServerFirstDelay: 30 * time.Millisecond}
	dial := up.dial(t)
	go func() {
		<-up.server
		time.Sleep(100 * time.Millisecond)
		app.Write([]byte("\x00\x01binary protocol"))
	}()
	res, err := d.Detect(context.Background(), proxySide, dial)
	if err != nil {
		t.Fatal(err)
	}
	if res.Protocol != Opaque || res.ServerFirst || res.Upstream == nil {
		t.Fatalf("got %+v; want client-first opaque reusing the early upstream", res)
	}
}

func TestDetectGarbageIsOpaque(t *testing.T) {
	app, proxySide := pair(t)
	go app.Write([]byte("\xff\xfe garbage \x00"))
	res, err := Detector{Timeout: time.Second}.Detect(context.Background(), proxySide, nil)
	if err != nil || res.Protocol != Opaque || res.TimedOut {
		t.Fatalf("got %+v, %v; want an immediate opaque decision", res, err)
	}
}

func TestDetectClientClosesEarly(t *testing.T) {
	app, proxySide := pair(t)
	app.Close()
	var up upstream
	_, err := Detector{Timeout: time.Second, ServerFirstDelay: 20 * time.Millisecond}.Detect(context.Background(), proxySide, up.dial(t))
	if err == nil {
		t.Fatal("want an error for a client that closed without sending anything")
	}
}

// A client that dials ahead of use and speaks HTTP long after the detect
// timeout is still HTTP while the server stays silent too.
func TestDetectSilentServerKeepsLateHTTPClientHTTP(t *testing.T) {
	app, proxySide := pair(t)
	var up upstream
	d := Detector{Timeout: 200 * time.Millisecond, ServerFirstDelay: 20 * time.Millisecond, MaxWait: 5 * time.Second}
	dial := up.dial(t)
	go func() {
		<-up.server
		time.Sleep(600 * time.Millisecond) // three detect timeouts
		app.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	}()
	res, err := d.Detect(context.Background(), proxySide, dial)
	if err != nil {
		t.Fatal(err)
	}
	if res.Protocol != HTTP1 || res.TimedOut {
		t.Fatalf("got %v timedOut=%v; want HTTP1", res.Protocol, res.TimedOut)
	}
}

// Without a probe (target unknown) the detect timeout still decides.
func TestDetectTimeoutWithoutProbe(t *testing.T) {
	_, proxySide := pair(t)
	d := Detector{Timeout: 200 * time.Millisecond, ServerFirstDelay: 20 * time.Millisecond, MaxWait: 5 * time.Second}
	start := time.Now()
	res, err := d.Detect(context.Background(), proxySide, nil)
	if err != nil || !res.TimedOut || res.Protocol != Opaque {
		t.Fatalf("got %+v, %v; want an opaque timeout", res, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %v", took)
	}
}

func TestDetectOpaqueUnlessTLS(t *testing.T) {
	for _, tc := range []struct {
		first []byte
		want  Protocol
	}{
		{[]byte("GET / HTTP/1.1\r\n\r\n"), Opaque}, // an opaque port: even HTTP-looking bytes stay opaque
		{[]byte("HEL"), Opaque},                    // decided on the first byte, no waiting for more
		{clientHello(t, "peer"), TLS},
	} {
		app, proxySide := pair(t)
		go app.Write(tc.first)
		res, err := Detector{Timeout: 5 * time.Second, OpaqueUnlessTLS: true}.Detect(context.Background(), proxySide, nil)
		if err != nil || res.Protocol != tc.want || res.TimedOut {
			t.Errorf("first bytes %q: got %v timedOut=%v err=%v; want %v", tc.first[:3], res.Protocol, res.TimedOut, err, tc.want)
		}
	}
}
