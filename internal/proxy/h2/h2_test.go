package h2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// The tests drive each side against net/http's HTTP/2 (h2c), the
// implementation most peers are measured against, and the two sides
// against each other.

// h2cServer starts net/http's h2c server with h.
func h2cServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// dialClient opens a ClientConn to addr.
func dialClient(t *testing.T, addr string, cfg ClientConfig) *ClientConn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// ourServer serves h with Server on a loopback listener until the test
// ends; drain, when cancelled, drains every connection.
func ourServer(t *testing.T, s *Server, drain context.Context) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if drain == nil {
		drain = context.Background()
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.ServeConn(t.Context(), c, drain)
		}
	}()
	return ln.Addr().String()
}

// h2cClient is net/http's h2c client.
func h2cClient(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// echo answers with the request body's length and hash, the request
// trailers it got, and an unannounced response trailer (as gRPC sends).
func echo(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Got", r.Header.Get("X-Send"))
	w.Write([]byte(strings.Repeat("r", int(n%7))))
	w.(http.Flusher).Flush()
	io.WriteString(w, "|")
	w.Write(h.Sum(nil))
	w.Header().Set(http.TrailerPrefix+"X-Request-Trailer", r.Trailer.Get("X-Req-Trailer"))
	w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
}

func roundTrip(t *testing.T, rt http.RoundTripper, url string, body []byte, trailer string) (*http.Response, []byte) {
	t.Helper()
	var rb io.Reader
	if body != nil {
		rb = bytes.NewReader(body)
	}
	req, _ := http.NewRequest("POST", url, rb)
	req.Header.Set("X-Send", "hello")
	if trailer != "" {
		req.Trailer = http.Header{"X-Req-Trailer": nil}
		req.ContentLength = -1
		req.Body = io.NopCloser(io.MultiReader(rb, readerFunc(func() { req.Trailer.Set("X-Req-Trailer", trailer) })))
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// readerFunc is an empty reader that calls f when read (to set trailers
// once the body is sent).
type readerFunc func()

func (f readerFunc) Read([]byte) (int, error) { f(); return 0, io.EOF }

func checkEcho(t *testing.T, resp *http.Response, b, sent []byte, trailer string) {
	t.Helper()
	sum := sha256.Sum256(sent)
	want := strings.Repeat("r", len(sent)%7) + "|" + string(sum[:])
	if resp.StatusCode != 200 || string(b) != want || resp.Header.Get("X-Got") != "hello" {
		t.Fatalf("status %d, X-Got %q, body %d bytes (want %d)", resp.StatusCode, resp.Header.Get("X-Got"), len(b), len(want))
	}
	if resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("X-Request-Trailer") != trailer {
		t.Fatalf("trailers %v; want Grpc-Status 0 and X-Request-Trailer %q", resp.Trailer, trailer)
	}
}

// Bodies larger than every flow-control window cross both ways, with
// trailers both ways, between every pairing of the two sides with
// net/http's.
func TestBodiesAndTrailers(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16) // 3 MiB: beyond the initial and the stream windows
	small := []byte("ping")
	ours := ourServer(t, &Server{Handler: http.HandlerFunc(echo), StreamWindow: 1 << 20}, nil)
	theirs := h2cServer(t, echo).Listener.Addr().String()
	for _, p := range []struct {
		name   string
		client func(addr string) http.RoundTripper
		server string
	}{
		{"our client, net/http server", func(a string) http.RoundTripper { return dialClient(t, a, ClientConfig{StreamWindow: 1 << 20}) }, theirs},
		{"net/http client, our server", func(string) http.RoundTripper { return h2cClient(t).Transport }, ours},
		{"our client, our server", func(a string) http.RoundTripper { return dialClient(t, a, ClientConfig{}) }, ours},
	} {
		t.Run(p.name, func(t *testing.T) {
			rt := p.client(p.server)
			url := "http://" + p.server + "/"
			for _, body := range [][]byte{nil, small, big} {
				resp, b := roundTrip(t, rt, url, body, "")
				checkEcho(t, resp, b, body, "")
			}
			resp, b := roundTrip(t, rt, url, big, "sum")
			checkEcho(t, resp, b, big, "sum")
		})
	}
}

// A response's interim 1xx heads reach the request's trace, and a body
// announced with "Expect: 100-continue" waits for the server's 100.
func TestInterimResponses(t *testing.T) {
	srv := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // net/http's server sends 100 here
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
	})
	cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{ExpectContinueWait: 10 * time.Second})
	var interim []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		interim = append(interim, code)
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "PUT", srv.URL, strings.NewReader("body"))
	req.Header.Set("Expect", "100-continue")
	start := time.Now()
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(interim) != 2 || interim[0] != 100 || interim[1] != 103 || time.Since(start) > 5*time.Second {
		t.Fatalf("interim responses %v after %v; want [100 103] well before the 10 s wait", interim, time.Since(start))
	}
}

// A 1xx response whose relay waits (on a slow client of the proxy's)
// holds up only its own request: the connection's other responses still
// arrive.
func TestSlowInterimRelayHoldsOnlyItsRequest(t *testing.T) {
	srv := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hints" {
			w.WriteHeader(http.StatusEarlyHints)
		}
	})
	cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{})
	release := make(chan struct{})
	trace := &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error {
		<-release
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", srv.URL+"/hints", nil)
	hinted := make(chan error, 1)
	go func() {
		resp, err := cc.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		hinted <- err
	}()
	time.Sleep(100 * time.Millisecond) // the 103 arrives and its relay waits
	other, _ := http.NewRequest("GET", srv.URL+"/other", nil)
	got := make(chan error, 1)
	go func() {
		resp, err := cc.RoundTrip(other)
		if err == nil {
			resp.Body.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting 1xx relay holds up the connection's other responses")
	}
	close(release)
	if err := <-hinted; err != nil {
		t.Fatal(err)
	}
}

// A request the client cancels is reset: the server's handler sees its
// context end, and the client's RoundTrip or body read fails at once.
func TestCancelResetsTheStream(t *testing.T) {
	handlerDone := make(chan error, 1)
	handler := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		handlerDone <- r.Context().Err()
	}
	for _, side := range []string{"our client", "our server"} {
		t.Run(side, func(t *testing.T) {
			var rt http.RoundTripper
			var url string
			if side == "our client" {
				srv := h2cServer(t, handler)
				rt, url = dialClient(t, srv.Listener.Addr().String(), ClientConfig{}), srv.URL
			} else {
				addr := ourServer(t, &Server{Handler: http.HandlerFunc(handler)}, nil)
				rt, url = h2cClient(t).Transport, "http://"+addr
			}
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			cancel()
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Fatal("the body of a cancelled request read to its end")
			}
			wantError(t, handlerDone, 5*time.Second, "handler context not done", "the server's handler did not see the reset")
		})
	}
}

// A handler that panics, or breaks off, resets its stream: the client
// sees an error, not a response cut short that looks whole.
func TestAbortedResponseIsReset(t *testing.T) {
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		w.Write([]byte("12345"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})}, nil)
	resp, err := h2cClient(t).Get("http://" + addr)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("an aborted response read as whole")
	}
}

// Draining sends GOAWAY: the request in flight finishes, new ones go to a
// new connection, and the connection closes once idle.
func TestDrain(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan struct{})
	drain, startDrain := context.WithCancel(context.Background())
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		io.WriteString(w, "done")
	})}, drain)
	cc := dialClient(t, addr, ClientConfig{})
	got := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+addr+"/slow", nil)
		resp, err := cc.RoundTrip(req)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(resp.Body)
			if err == nil && string(b) != "done" {
				err = errors.New("body " + string(b))
			}
		}
		got <- err
	}()
	select { // the server has the request (before, its GOAWAY would rightly refuse it)
	case <-arrived:
	case err := <-got:
		t.Fatalf("the request ended before it reached the server: %v", err)
	}
	startDrain()
	testkit.WaitFor(t, "the GOAWAY", func() bool { return cc.Reserve() != nil })
	close(release)
	if err := <-got; err != nil {
		t.Fatalf("the request in flight during the drain: %v", err)
	}
	testkit.WaitFor(t, "the connection to close once idle", func() bool { return cc.Err() != nil })
}

// A connection without requests for IdleTimeout is closed with GOAWAY.
func TestIdleTimeout(t *testing.T) {
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), IdleTimeout: 200 * time.Millisecond}, nil)
	cc := dialClient(t, addr, ClientConfig{})
	req, _ := http.NewRequest("GET", "http://"+addr, nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	testkit.WaitFor(t, "the connection to close", func() bool { return cc.Err() != nil })
}

// The idle countdown, on either side, starts when the last request ends:
// a connection carrying a request every 50 ms outlives several
// IdleTimeouts of 200 ms, and so does one whose last request runs longer
// than IdleTimeout; it closes IdleTimeout after that last request, not
// sooner and not never.
func TestIdleTimeoutCountsFromTheLastRequest(t *testing.T) {
	const idle = 200 * time.Millisecond
	for _, side := range []string{"server", "client"} {
		srv := &Server{Handler: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				time.Sleep(idle * 3 / 2)
			}
		})}
		cfg := ClientConfig{}
		if side == "server" {
			srv.IdleTimeout = idle
		} else {
			cfg.IdleTimeout = idle
		}
		addr := ourServer(t, srv, nil)
		cc := dialClient(t, addr, cfg)
		var last time.Time
		get := func(path string) {
			t.Helper()
			req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s idle timeout: %s on a connection in use: %v", side, path, err)
			}
			resp.Body.Close()
			last = time.Now()
		}
		for start := time.Now(); time.Since(start) < 3*idle; time.Sleep(idle / 4) {
			get("/")
		}
		get("/slow")
		testkit.WaitFor(t, "the connection to close", func() bool { return cc.Err() != nil })
		if after := time.Since(last); after < idle*3/4 {
			t.Errorf("%s idle timeout: closed %v after the last request; want about %v", side, after, idle)
		}
	}
}

// Our client refuses to send a request header list beyond what the
// server announced; our server answers one sent anyway with 431.
func TestHeaderListLimits(t *testing.T) {
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), MaxHeaderBytes: 4096}, nil)
	cc := dialClient(t, addr, ClientConfig{})
	small, _ := http.NewRequest("GET", "http://"+addr, nil)
	if resp, err := cc.RoundTrip(small); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close() // the server's SETTINGS have arrived
	}
	req, _ := http.NewRequest("GET", "http://"+addr, nil)
	for _, k := range []string{"X-Big-1", "X-Big-2", "X-Big-3"} {
		req.Header.Set(k, strings.Repeat("x", 2000)) // each field fits, not all
	}
	if _, err := cc.RoundTrip(req); !errors.Is(err, ErrHeaderListTooLarge) {
		t.Fatalf("error %v; want ErrHeaderListTooLarge", err)
	}
	cc.mu.Lock()
	cc.peerMaxList = 0 // as a client that ignores the limit
	cc.mu.Unlock()
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d; want 431", resp.StatusCode)
	}
}

// Streams beyond the server's limit are refused (REFUSED_STREAM), which
// the client reports as not processed.
func TestStreamLimit(t *testing.T) {
	release := make(chan struct{})
	var running atomic.Int32
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			running.Add(1)
			<-release
		}
	}), MaxConcurrentStreams: 1}, nil)
	defer close(release)
	cc := dialClient(t, addr, ClientConfig{})
	get := func(path string) error {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		resp, err := cc.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get("/"); err != nil { // the server's SETTINGS arrived before its answer
		t.Fatal(err)
	}
	go func() {
		// The server counts a handler until it has returned, a moment after
		// its response ended: "/" may still hold the one place.
		for errors.Is(get("/hold"), ErrRefused) && running.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
	}()
	testkit.WaitFor(t, "the handler to run", func() bool { return running.Load() == 1 })
	if err := cc.Reserve(); !errors.Is(err, ErrConnUnusable) {
		t.Fatalf("Reserve at the server's limit: %v", err)
	}
	cc.mu.Lock()
	cc.maxStreams = 100 // as if the server had not said
	cc.mu.Unlock()
	if err := get("/"); !errors.Is(err, ErrRefused) {
		t.Fatalf("error %v; want a refused stream", err)
	}
}

// wantError waits up to d for an error from errs: nil fails the test
// with ifNil, none in time with ifNone.
func wantError(t *testing.T, errs <-chan error, d time.Duration, ifNil, ifNone string) {
	t.Helper()
	select {
	case err := <-errs:
		if err == nil {
			t.Fatal(ifNil)
		}
	case <-time.After(d):
		t.Fatal(ifNone)
	}
}

// A request with trailers and no body (HEADERS, then trailers ending the
// stream) reaches the server with its trailers; the client must not read
// a body that is not there.
func TestTrailersWithoutBody(t *testing.T) {
	got := make(chan string, 1)
	srv := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Trailer.Get("X-T")
	})
	cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{})
	req, _ := http.NewRequest("POST", srv.URL, nil)
	req.Body = nil
	req.Trailer = http.Header{"X-T": {"v"}}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if v := <-got; v != "v" {
		t.Fatalf("trailer %q; want v", v)
	}
}

// A stream window made negative by the peer's SETTINGS (RFC 9113 §6.9.2)
// still lets an empty DATA frame end the stream, and holds data back.
func TestNegativeWindow(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go io.Copy(io.Discard, server)
	var mu sync.Mutex
	var o output
	o.init(client, &mu, 0)
	mu.Lock()
	defer mu.Unlock()
	stream := sendFlow{window: -10}
	if err := o.sendData(1, nil, true, &stream, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if len(o.out) != 9 || stream.window != -10 {
		t.Fatalf("queued %d bytes, window %d; want one empty DATA frame, window -10", len(o.out), stream.window)
	}
}

// rawClient dials addr as a hand-driven HTTP/2 client: the preface and
// SETTINGS (with settings) are sent; frames are read and written with the
// returned Framer.
func rawClient(t *testing.T, addr string, settings ...http2.Setting) (net.Conn, *http2.Framer) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.WriteSettings(settings...)
	return c, fr
}

// writeGet sends a GET of path on stream id, ending the stream.
func writeGet(fr *http2.Framer, id uint32, path string) error {
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "raw.test"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
}

// grantAll gives the peer every window, stream and connection: a peer
// that then stops reading has the other side write until its sockets are
// full.
func grantAll(fr *http2.Framer) {
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow})
	fr.WriteWindowUpdate(0, maxWindow-initialWindow)
}

// A client that stops reading costs the server its connection after the
// write timeout, not for ever: the handler's write fails and the
// connection closes.
func TestStalledClientIsDropped(t *testing.T) {
	wrote := make(chan error, 1)
	addr := ourServer(t, &Server{WriteTimeout: 200 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 1<<20)
		for range 1 << 10 { // 1 GiB: far beyond what the sockets buffer
			if _, err := w.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	})}, nil)
	_, fr := rawClient(t, addr)
	grantAll(fr)
	writeGet(fr, 1, "/") // and reads nothing
	wantError(t, wrote, 20*time.Second, "1 GiB was written to a client that reads nothing", "the handler still writes to a client that stopped reading")
}

// A server that stops reading fails the client's connection after the
// write timeout: the request with a body it does not take ends.
func TestStalledServerIsDropped(t *testing.T) {
	addr := testkit.Serve(t, func(c net.Conn) {
		grantAll(http2.NewFramer(c, nil)) // and reads nothing
		<-t.Context().Done()
	})
	cc := dialClient(t, addr, ClientConfig{WriteTimeout: 200 * time.Millisecond})
	body := io.LimitReader(zeros{}, 1<<30)
	req, _ := http.NewRequest("POST", "http://stall.test/", body)
	req.ContentLength = -1 // unknown: sent until EOF
	done := make(chan error, 1)
	go func() {
		resp, err := cc.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	wantError(t, done, 20*time.Second, "a request got an answer from a server that sends none", "the request still waits on a server that stopped reading")
	if cc.Err() == nil {
		t.Fatal("the connection to a server that stopped reading is still usable")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Many streams waiting for small windows, both ways, all finish: a
// connection window update wakes the first stream in line, which hands
// what it leaves to the next.
func TestStreamsShareSmallWindows(t *testing.T) {
	const streams, size = 40, 256 << 10
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(echo), StreamWindow: initialWindow, ConnWindow: initialWindow}, nil)
	cc := dialClient(t, addr, ClientConfig{StreamWindow: initialWindow, ConnWindow: initialWindow})
	body := bytes.Repeat([]byte("w"), size)
	sum := sha256.Sum256(body)
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for range streams {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", "http://"+addr+"/", bytes.NewReader(body))
			resp, err := cc.RoundTrip(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.HasSuffix(b, sum[:]) {
				errs <- fmt.Errorf("response %d bytes, %v", len(b), err)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("streams sharing small windows stalled")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A client that gives a stream no window for the write timeout gets it
// reset, and the handler's write fails: the stream does not wait for ever.
func TestStalledWindowResetsTheStream(t *testing.T) {
	wrote := make(chan error, 1)
	addr := ourServer(t, &Server{WriteTimeout: 200 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		_, err := w.Write(bytes.Repeat([]byte("y"), 1<<10))
		if err == nil {
			w.(http.Flusher).Flush()
			_, err = w.Write([]byte("z")) // a write after a failed flush reports it
		}
		wrote <- err
	})}, nil)
	c, fr := rawClient(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	writeGet(fr, 1, "/")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no RST_STREAM for a stream given no window: %v", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 1 {
			break
		}
	}
	wantError(t, wrote, 5*time.Second, "the handler's writes all succeeded on a stream given no window", "the handler still waits for window")
}

// A response head HTTP/2 does not allow — Content-Length fields that
// differ or are not digits, a connection-specific field — fails its
// request (the proxy answers 502) rather than being relayed, where a
// client of the proxy's would frame the body by one of them.
func TestMalformedResponseHeads(t *testing.T) {
	for name, fields := range map[string][][2]string{
		"two lengths":     {{"content-length", "5"}, {"content-length", "6"}},
		"signed length":   {{"content-length", "+5"}},
		"connection":      {{"connection", "close"}},
		"transfer-coding": {{"transfer-encoding", "chunked"}},
	} {
		t.Run(name, func(t *testing.T) {
			addr := testkit.Serve(t, func(c net.Conn) {
				io.ReadFull(c, make([]byte, len(http2.ClientPreface)))
				fr := http2.NewFramer(c, c)
				fr.WriteSettings()
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if h, ok := f.(*http2.HeadersFrame); ok {
						var block bytes.Buffer
						enc := hpack.NewEncoder(&block)
						enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
						for _, f := range fields {
							enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
						}
						fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: block.Bytes(), EndHeaders: true})
						fr.WriteData(h.StreamID, true, []byte("hello"))
					}
				}
			})
			cc := dialClient(t, addr, ClientConfig{})
			req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
			resp, err := cc.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("a response with %v was taken: %v", fields, resp.Header)
			}
		})
	}
}

// A connection closed gracefully (here idle) after its GOAWAY still reads
// what the client sends meanwhile, then ends with a clean close: closing
// with the client's frames unread would reset the connection, and the
// reset can destroy the GOAWAY and the last responses before the client
// reads them.
func TestGracefulCloseReadsTheClientsLastFrames(t *testing.T) {
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), IdleTimeout: 100 * time.Millisecond}, nil)
	c, fr := rawClient(t, addr)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY: %v", err)
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			break
		}
	}
	// A request sent as the GOAWAY was on its way, and a PING.
	if err := writeGet(fr, 1, "/"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // a reset, had the server closed with the request unread, arrives meanwhile
	if err := fr.WritePing(false, [8]byte{}); err != nil {
		t.Fatalf("the server reset the connection: %v", err)
	}
	for {
		_, err := fr.ReadFrame()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("the connection ended with %v, not a clean close", err)
		}
	}
}

// The header lists of a connection's requests in flight are bounded
// together: beyond the budget (4 MiB here) new streams are refused, and
// taken again once those in flight finish.
func TestHeaderBudgetRefusesStreams(t *testing.T) {
	release := make(chan struct{})
	var running atomic.Int32
	addr := ourServer(t, &Server{MaxHeaderBytes: 64 << 10, Handler: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			running.Add(1)
			<-release
		}
	})}, nil)
	cc := dialClient(t, addr, ClientConfig{})
	get := func(path string) error {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Header.Set("X-Big", strings.Repeat("b", 30<<10))
		resp, err := cc.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get("/"); err != nil {
		t.Fatal(err)
	}
	const n = 200
	errs := make(chan error, n)
	for range n {
		go func() { errs <- get("/hold") }()
	}
	refused := 0
	testkit.WaitFor(t, "every request to run or be refused", func() bool {
		for {
			select {
			case err := <-errs:
				if !errors.Is(err, ErrRefused) {
					t.Errorf("a request beyond the budget: %v; want ErrRefused", err)
				}
				refused++
				continue
			default:
			}
			return int(running.Load())+refused == n
		}
	})
	if r := running.Load(); r < 100 || r > 140 {
		t.Errorf("%d requests of 30 KiB of fields in flight; want the ~136 a 4 MiB budget holds", r)
	}
	close(release)
	for range int(running.Load()) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if err := get("/"); err != nil {
		t.Fatalf("after the requests in flight ended: %v", err)
	}
}

// A client whose requests wait more than a second and are then given up
// (deadlines expiring under load) is not a rapid-reset flood, however
// many it cancels: its connection stays open.
func TestLongWaitingCancelsAreNotAFlood(t *testing.T) {
	var holding atomic.Int32
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			holding.Add(1)
			<-r.Context().Done()
		}
	})}, nil)
	cc := dialClient(t, addr, ClientConfig{})
	get := func(ctx context.Context, path string) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
		resp, err := cc.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	// Until the server's SETTINGS arrive the client opens at most
	// initialMaxStreams, fewer than this test needs at once.
	testkit.WaitFor(t, "the server's SETTINGS", func() bool {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		return cc.maxStreams >= 2*floodMinResets
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 2 * floodMinResets {
		wg.Go(func() { get(ctx, "/hold") })
	}
	testkit.WaitFor(t, "every handler to hold", func() bool { return holding.Load() == 2*floodMinResets })
	time.Sleep(prematureLifetime + 500*time.Millisecond) // all of them older than that
	cancel()
	wg.Wait()
	if err := get(context.Background(), "/"); err != nil {
		t.Fatalf("after %d requests given up after a second: %v", 2*floodMinResets, err)
	}
	if err := cc.Err(); err != nil {
		t.Fatalf("the connection was closed: %v", err)
	}
}

// The head is the header as it was at WriteHeader: fields set after it
// are not in it, but announced trailers and http.TrailerPrefix ones
// follow the body; a taken map is the head as it is; an invalid
// Content-Length is dropped, and a whole body without one gets its length.
func TestResponseHeadIsTheHeaderAtWriteHeader(t *testing.T) {
	var took atomic.Bool
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstream := http.Header{"X-Up": {"u"}, "Trailer": {"X-Announced"}}
		if r.URL.Path == "/take" {
			took.Store(w.(interface{ TakeHeader(http.Header) bool }).TakeHeader(upstream))
		} else {
			w.Header().Set("X-Own", "o")
			w.Header().Set("Content-Length", "x1")
		}
		w.WriteHeader(http.StatusAccepted)
		w.Header().Set("X-Late", "l")
		w.Header().Set("X-Announced", "a")
		w.Header().Set(http.TrailerPrefix+"X-Prefixed", "p")
		io.WriteString(w, "body")
	})}, nil)
	client := h2cClient(t)
	for _, tc := range []struct{ path, field, value string }{{"/take", "X-Up", "u"}, {"/own", "X-Own", "o"}} {
		resp, err := client.Get("http://" + addr + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || string(body) != "body" || resp.Header.Get(tc.field) != tc.value {
			t.Errorf("%s: %d %q %v", tc.path, resp.StatusCode, body, resp.Header)
		}
		if resp.Header.Get("X-Late") != "" || resp.Header.Get("Date") == "" {
			t.Errorf("%s: head %v; want it as at WriteHeader, with a Date", tc.path, resp.Header)
		}
		if tc.path == "/own" && resp.ContentLength != 4 {
			t.Errorf("%s: Content-Length %d; want the invalid one dropped and the body's, 4", tc.path, resp.ContentLength)
		}
		if tc.path == "/take" && (resp.Trailer.Get("X-Announced") != "a" || resp.Trailer.Get("X-Prefixed") != "p") {
			t.Errorf("%s: trailers %v; want X-Announced and X-Prefixed", tc.path, resp.Trailer)
		}
	}
	if !took.Load() {
		t.Error("the writer did not take a map while it held no fields")
	}
}
