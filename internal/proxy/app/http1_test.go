package app_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/proxytest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// backend is an application server that counts and echoes what it receives.
type backend struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	last     *http.Request
}

func newBackend(t *testing.T) *backend {
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		b.mu.Lock()
		b.last = r
		b.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		w.Header().Add("X-Multi", "one")
		w.Header().Add("X-Multi", "two")
		w.Header().Set("X-Path", r.URL.RequestURI())
		switch r.URL.Path {
		case "/status/503":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/slow":
			time.Sleep(500 * time.Millisecond)
		case "/http10":
			// A response with no length: HTTP/1.0 clients get it ended by close.
			w.(http.Flusher).Flush()
		}
		w.Write(body)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) lastRequest() *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// inboundProxy starts a proxy forwarding inbound connections to b.
func inboundProxy(t *testing.T, b *backend, mutate ...func(*config.Config)) *proxytest.Proxy {
	cfg := proxytest.Config(t)
	cfg.AppAddr = b.Listener.Addr().String()
	for _, m := range mutate {
		m(cfg)
	}
	return proxytest.Start(t, cfg)
}

// raw sends s on a new connection to addr and returns the connection and a
// reader over what comes back.
func raw(t *testing.T, addr, s string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(body)
}

// assertClosed checks that the proxy closed the connection.
func assertClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if b, err := br.ReadByte(); err == nil {
		t.Fatalf("connection still open: read %q", b)
	}
}

func TestPipelinedRequestsAnsweredInOrder(t *testing.T) {
	b := newBackend(t)
	p := inboundProxy(t, b)
	var req strings.Builder
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&req, "POST /n/%d HTTP/1.1\r\nHost: app\r\nContent-Length: 1\r\n\r\n%d", i, i)
	}
	_, br := raw(t, p.InboundAddr.String(), req.String())
	for i := 0; i < 5; i++ {
		resp, body := readResponse(t, br, "POST")
		if got := resp.Header.Get("X-Path"); got != fmt.Sprintf("/n/%d", i) || body != fmt.Sprint(i) {
			t.Fatalf("response %d: path %q body %q", i, got, body)
		}
	}
}

func TestHeadersPassThrough(t *testing.T) {
	b := newBackend(t)
	p := inboundProxy(t, b)
	_, br := raw(t, p.InboundAddr.String(), "GET /a%2Fb?x=1;y=2&x=3 HTTP/1.1\r\nHost: app.example\r\n"+
		"X-Forwarded-For: 192.0.2.1\r\nX-Rep: a\r\nX-Rep: b\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n"+
		"Proxy-Connection: keep-alive\r\n\r\n")
	resp, _ := readResponse(t, br, "GET")
	if got := resp.Header.Values("X-Multi"); len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Errorf("repeated response header = %q", got)
	}
	if got := resp.Header.Get("X-Path"); got != "/a%2Fb?x=1;y=2&x=3" {
		t.Errorf("request target reached the app as %q", got)
	}
	r := b.lastRequest()
	if r.Host != "app.example" {
		t.Errorf("Host = %q", r.Host)
	}
	if got := r.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Errorf("X-Forwarded-For changed to %q", got)
	}
	if got := r.Header.Values("X-Rep"); len(got) != 2 {
		t.Errorf("repeated request header = %q", got)
	}
	for _, h := range []string{"X-Hop", "Keep-Alive", "Proxy-Connection"} {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("hop-by-hop header %s forwarded: %q", h, v)
		}
	}
	if ua, ok := r.Header["User-Agent"]; ok {
		t.Errorf("proxy added User-Agent %q", ua)
	}
}

// Heads that could frame a body one way here and another way upstream, or
// that net/http's own server refuses, are answered 400 and the connection
// closed; nothing reaches the application.
func TestRequestSmugglingRefused(t *testing.T) {
	b := newBackend(t)
	p := inboundProxy(t, b)
	smuggled := "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n"
	for name, head := range map[string]string{
		"Content-Length and Transfer-Encoding": "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
		"space before the colon (TE)":          "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 41\r\nTransfer-Encoding : chunked\r\n\r\n",
		"space before the colon (CL)":          "POST / HTTP/1.1\r\nHost: app\r\nContent-Length : 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"Transfer-Encoding in HTTP/1.0":        "POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 without Host":                "GET / HTTP/1.1\r\n\r\n",
		"invalid Host":                         "GET / HTTP/1.1\r\nHost: a b/c@d\r\n\r\n",
	} {
		_, br := raw(t, p.InboundAddr.String(), head+smuggled)
		resp, _ := readResponse(t, br, "POST")
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("l5d-proxy-error") == "" || resp.Header.Get("Date") == "" {
			t.Errorf("%s: status %d, error header %q, Date %q; want 400 with a reason and a date", name, resp.StatusCode, resp.Header.Get("l5d-proxy-error"), resp.Header.Get("Date"))
			continue
		}
		assertClosed(t, br)
	}
	if n := b.requests.Load(); n != 0 {
		t.Fatalf("the application received %d requests; want none", n)
	}
}

func TestOversizeHeaderRefused(t *testing.T) {
	b := newBackend(t)
	p := inboundProxy(t, b)
	_, br := raw(t, p.InboundAddr.String(), "GET / HTTP/1.1\r\nHost: app\r\nX-Big: "+strings.Repeat("a", 70<<10)+"\r\n\r\n")
	resp, _ := readResponse(t, br, "GET")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d; want 431", resp.StatusCode)
	}
	assertClosed(t, br)
}

func TestSlowlorisClientsAreCutOffWithBoundedMemory(t *testing.T) {
	b := newBackend(t)
	p := inboundProxy(t, b, func(c *config.Config) { c.HeaderReadTimeout = 300 * time.Millisecond })
	runtime.GC()
	goroutines := runtime.NumGoroutine()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	const clients = 200
	var wg sync.WaitGroup
	statuses := make(chan int, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", p.InboundAddr.String())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			// A head trickling in a few bytes at a time, never finishing.
			go func() {
				io.WriteString(c, "GET / HTTP/1.1\r\n")
				for j := 0; j < 20; j++ {
					if _, err := io.WriteString(c, "X: y\r\n"); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				statuses <- 0
				return
			}
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusRequestTimeout {
			t.Fatalf("slow client got %d; want 408", s)
		}
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 16<<20 {
		t.Errorf("heap grew by %d MiB for %d slow clients", grew>>20, clients)
	}
	waitGoroutines(t, goroutines)
	if n := b.requests.Load(); n != 0 {
		t.Fatalf("the application received %d requests", n)
	}
}

// waitGoroutines waits for the goroutine count to fall back to n (plus a
// little slack for runtime helpers) and fails if it does not.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := runtime.NumGoroutine()
		if got <= n+5 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines leaked: %d, want <= %d\n%s", got, n+5, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExpectContinue(t *testing.T) {
	b := newBackend(t)
	p := inboundProxy(t, b)
	c, br := raw(t, p.InboundAddr.String(), "PUT /up HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("want 100 Continue before sending the body, got %q, %v", line, err)
	}
	if blank, _ := br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("100 response not terminated: %q", blank)
	}
	io.WriteString(c, "hello")
	resp, body := readResponse(t, br, "PUT")
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestBodyFramingBothWays(t *testing.T) {
	b := newBackend(t)
	p := inboundProxy(t, b)
	for _, tc := range []struct {
		name, request, body string
		closes              bool
	}{
		{"chunked request and response", "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", false},
		// A response with no length reaches an HTTP/1.0 client ended by close.
		{"HTTP/1.0 client", "POST /http10 HTTP/1.0\r\nHost: app\r\nContent-Length: 3\r\n\r\nabc", "abc", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, br := raw(t, p.InboundAddr.String(), tc.request)
			resp, body := readResponse(t, br, "POST")
			if resp.StatusCode != 200 || body != tc.body {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			if tc.closes {
				assertClosed(t, br)
			}
		})
	}
}

func TestHEADHasNoBody(t *testing.T) {
	b := newBackend(t)
	p := inboundProxy(t, b)
	_, br := raw(t, p.InboundAddr.String(), "HEAD / HTTP/1.1\r\nHost: app\r\n\r\nGET /second HTTP/1.1\r\nHost: app\r\n\r\n")
	resp, _ := readResponse(t, br, "HEAD")
	if resp.StatusCode != 200 {
		t.Fatalf("HEAD got %d", resp.StatusCode)
	}
	// If the proxy had sent a body for HEAD, this response would be garbage.
	resp, _ = readResponse(t, br, "GET")
	if resp.Header.Get("X-Path") != "/second" {
		t.Fatalf("second response after HEAD is for %q", resp.Header.Get("X-Path"))
	}
}

func TestUpstreamRefusedIs502WithReason(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now
	cfg := proxytest.Config(t)
	cfg.AppAddr = addr
	p := proxytest.Start(t, cfg)
	_, br := raw(t, p.InboundAddr.String(), "GET / HTTP/1.1\r\nHost: app\r\n\r\n")
	resp, _ := readResponse(t, br, "GET")
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("l5d-proxy-error") != "connection refused" {
		t.Fatalf("got %d %q; want 502 connection refused", resp.StatusCode, resp.Header.Get("l5d-proxy-error"))
	}
}

// TestClientHangupCancelsUpstreamRequest: a client that closes its
// connection while its request waits on the application cancels the
// application's request, whether the request is the connection's first or
// follows a quick one (whose watch countdown is still running when the
// long one starts).
func TestClientHangupCancelsUpstreamRequest(t *testing.T) {
	for _, quickFirst := range []bool{false, true} {
		cancelled := make(chan struct{})
		started := make(chan struct{})
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/quick" {
				io.WriteString(w, "ok")
				return
			}
			close(started)
			<-r.Context().Done() // a long poll: answers only when it must
			close(cancelled)
		}))
		cfg := proxytest.Config(t)
		cfg.AppAddr = app.Listener.Addr().String()
		p := proxytest.Start(t, cfg)
		const poll = "GET /poll HTTP/1.1\r\nHost: app\r\n\r\n"
		first := poll
		if quickFirst {
			first = "GET /quick HTTP/1.1\r\nHost: app\r\n\r\n"
		}
		c, br := raw(t, p.InboundAddr.String(), first)
		if quickFirst {
			if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != http.StatusOK {
				t.Fatalf("quick request: %d", resp.StatusCode)
			}
			io.WriteString(c, poll)
		}
		<-started
		time.Sleep(50 * time.Millisecond) // past the point where the proxy starts watching
		c.Close()
		select {
		case <-cancelled:
		case <-time.After(3 * time.Second):
			t.Fatalf("quick request first %v: the application's request was not cancelled after the client hung up", quickFirst)
		}
		app.Close()
	}
}

// TestUpstreamClosingIdleConnectionsIsInvisible: an upstream that closes
// each keep-alive connection right after answering must not turn the next
// request into an error, whether the proxy notices before reusing the
// connection or only when using it.
func TestUpstreamClosingIdleConnectionsIsInvisible(t *testing.T) {
	p := rawProxy(t, rawApp(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		// Keep-alive promised, then the connection closes anyway.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}))
	client := &http.Client{}
	for i, idle := range []time.Duration{0, 10 * time.Millisecond, 250 * time.Millisecond, 10 * time.Millisecond} {
		time.Sleep(idle)
		resp, err := client.Get("http://" + p.InboundAddr.String() + "/")
		if err != nil {
			t.Fatalf("request %d after %v idle: %v", i, idle, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d after %v idle: %d %q (%s)", i, idle, resp.StatusCode, body, resp.Header.Get("l5d-proxy-error"))
		}
	}
}

// rawApp is an application that speaks HTTP/1.1 by hand: serve is called
// with each connection and a reader over it.
func rawApp(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) string {
	return testkit.Serve(t, func(c net.Conn) { serve(c, bufio.NewReader(c)) })
}

func rawProxy(t *testing.T, app string) *proxytest.Proxy {
	cfg := proxytest.Config(t)
	cfg.AppAddr = app
	return proxytest.Start(t, cfg)
}

// A response field name with whitespace before the colon is not relayed
// (RFC 9112 §5.1): 502.
func TestInvalidResponseFieldIs502(t *testing.T) {
	p := rawProxy(t, rawApp(t, func(c net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length : 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	}))
	resp, err := http.Get("http://" + p.InboundAddr.String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d; want 502", resp.StatusCode)
	}
}

// An upstream that drops a reused connection without answering may have
// acted on the request: only idempotent ones are sent again (RFC 9110 §9.2.2).
func TestOnlyIdempotentRequestsAreRetriedOnAStaleConnection(t *testing.T) {
	var seen sync.Map // method → *atomic.Int64
	p := rawProxy(t, rawApp(t, func(c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			n, _ := seen.LoadOrStore(req.Method, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			if i == 1 {
				return // the second request on a connection: dropped unanswered
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	}))
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		for i := range 2 {
			req, _ := http.NewRequest(m, "http://"+p.InboundAddr.String()+"/", nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			// Each request goes out on the connection the last one left
			// pooled, as that connection's second request: GETs are sent
			// again on a new one, the first POST is not (the second then
			// gets a new connection).
			want := http.StatusOK
			if m == http.MethodPost && i == 0 {
				want = http.StatusBadGateway
			}
			if resp.StatusCode != want {
				t.Errorf("%s #%d: status %d; want %d", m, i+1, resp.StatusCode, want)
			}
		}
	}
	for m, want := range map[string]int64{http.MethodGet: 3, http.MethodPost: 2} {
		n, _ := seen.Load(m)
		if got := n.(*atomic.Int64).Load(); got != want {
			t.Errorf("the application saw %d %s requests; want %d", got, m, want)
		}
	}
}

// Interim responses reach HTTP/1.1 clients, never HTTP/1.0 ones (RFC 9110
// §15.2); forwarded responses without a Date get one.
func TestInterimResponsesAndDate(t *testing.T) {
	p := rawProxy(t, rawApp(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	}))
	for proto, want := range map[string]string{"HTTP/1.1": "HTTP/1.1 103 Early Hints", "HTTP/1.0": "HTTP/1.1 200 OK"} {
		_, br := raw(t, p.InboundAddr.String(), "GET / "+proto+"\r\nHost: app\r\n\r\n")
		line, err := br.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != want {
			t.Errorf("%s client: first line %q (%v); want %q", proto, line, err, want)
			continue
		}
		if proto == "HTTP/1.1" {
			for line != "\r\n" && err == nil {
				line, err = br.ReadString('\n') // the rest of the 103
			}
		} else {
			br = bufio.NewReader(io.MultiReader(strings.NewReader(line), br))
		}
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != 200 || body != "ok" || resp.Header.Get("Date") == "" || resp.Header.Get("Link") != "" {
			t.Errorf("%s client: %d %q Date %q Link %q", proto, resp.StatusCode, body, resp.Header.Get("Date"), resp.Header.Get("Link"))
		}
	}
}

// A client that stalls in the middle of its body still gets the answer the
// application gave without waiting for the rest.
func TestEarlyAnswerToAStalledBodyArrives(t *testing.T) {
	p := rawProxy(t, rawApp(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 7\r\nConnection: close\r\n\r\ntimeout")
	}))
	c, br := raw(t, p.InboundAddr.String(), "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nabc")
	c.SetDeadline(time.Now().Add(3 * time.Second))
	start := time.Now()
	resp, body := readResponse(t, br, "POST")
	if resp.StatusCode != http.StatusRequestTimeout || body != "timeout" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	t.Logf("answered after %v", time.Since(start).Round(time.Millisecond))
	assertClosed(t, br)
}

// A CONNECT on a connection the proxy intercepted is for the proxy behind
// it (an application's HTTPS_PROXY): its 200 opens a tunnel, and the bytes
// after it go both ways untouched.
func TestConnectToTheNextProxyTunnels(t *testing.T) {
	p := rawProxy(t, rawApp(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect || req.Host != "example.com:443" {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\nProxy-Agent: test\r\n\r\n")
		io.Copy(c, br) // echo what the tunnel carries
	}))
	c, br := raw(t, p.InboundAddr.String(), "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("CONNECT answered %q %v", line, err)
	}
	for line != "\r\n" && err == nil {
		line, err = br.ReadString('\n')
		if strings.Contains(strings.ToLower(line), "transfer-encoding") || strings.Contains(strings.ToLower(line), "content-length") {
			t.Errorf("a tunnel's 200 carries %q", line)
		}
	}
	io.WriteString(c, "\x16\x03\x01 tls bytes\n")
	if got, err := br.ReadString('\n'); err != nil || got != "\x16\x03\x01 tls bytes\n" {
		t.Fatalf("through the tunnel: %q %v", got, err)
	}
}

// Response heads are bounded too: a 10 KiB one passes whole, one past
// 256 KiB is a 502, not memory without limit.
func TestResponseHeadSize(t *testing.T) {
	for _, tt := range []struct {
		size int
		want int
	}{{10 << 10, http.StatusOK}, {300 << 10, http.StatusBadGateway}} {
		big := strings.Repeat("a", tt.size)
		p := rawProxy(t, rawApp(t, func(c net.Conn, br *bufio.Reader) {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+big+"\r\nContent-Length: 2\r\n\r\nok")
		}))
		resp, err := http.Get("http://" + p.InboundAddr.String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want || tt.want == http.StatusOK && resp.Header.Get("X-Big") != big {
			t.Errorf("a %d-byte field: status %d (%q), field intact %v; want %d", tt.size, resp.StatusCode, resp.Header.Get("l5d-proxy-error"), resp.Header.Get("X-Big") == big, tt.want)
		}
	}
}

// What the application saw of requests through the outbound port as a
// forward proxy (HTTP_PROXY): an OPTIONS for the whole server is "*"
// (RFC 9112 §3.2.4), and "Te: trailers" travels named in Connection.
func TestForwardProxyRequestTargets(t *testing.T) {
	seen := make(chan string, 4)
	app := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			seen <- req.Method + " " + req.RequestURI + " te=" + req.Header.Get("Te") + " connection=" + req.Header.Get("Connection")
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	p := rawProxy(t, testkit.FreeAddr(t)) // only its outbound port is used
	for _, tt := range []struct{ send, want string }{
		{"OPTIONS http://" + app + " HTTP/1.1\r\nHost: " + app + "\r\n\r\n", "OPTIONS * te= connection="},
		{"GET http://" + app + "/a|b/%7e?q=1|2 HTTP/1.1\r\nHost: " + app + "\r\nTE: trailers\r\nConnection: TE\r\n\r\n", "GET /a|b/%7e?q=1|2 te=trailers connection=TE"},
	} {
		_, br := raw(t, p.OutboundAddr.String(), tt.send)
		if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != http.StatusOK {
			t.Fatalf("%q: status %d (%s)", tt.send, resp.StatusCode, resp.Header.Get("l5d-proxy-error"))
		}
		if got := <-seen; got != tt.want {
			t.Errorf("sent %q: the application saw %q; want %q", tt.send, got, tt.want)
		}
	}
}

// HTTP/1.0 has neither expectations nor upgrades (RFC 9110 §10.1.1, §7.8):
// an HTTP/1.0 client's are not passed on as HTTP/1.1 ones.
func TestHTTP10ExpectAndUpgradeIgnored(t *testing.T) {
	seen := make(chan string, 1)
	p := rawProxy(t, rawApp(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		seen <- fmt.Sprintf("expect=%q upgrade=%q body=%q", req.Header.Get("Expect"), req.Header.Get("Upgrade"), body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}))
	_, br := raw(t, p.InboundAddr.String(), "POST / HTTP/1.0\r\nHost: app\r\nExpect: 100-continue\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nhi")
	if resp, body := readResponse(t, br, "POST"); resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if got, want := <-seen, `expect="" upgrade="" body="hi"`; got != want {
		t.Errorf("the application saw %s; want %s", got, want)
	}
}
