package app_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/meshtest"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
)

// diffApp is the application of the behaviour differential: one handler
// per kind of response a real server sends.
func diffApp(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	flush := func() { http.NewResponseController(w).Flush() }
	switch r.URL.Path {
	case "/body": // known length
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		if r.Method != http.MethodHead {
			w.Write(pattern(n))
		}
	case "/stream": // unknown length, written in pieces
		w.Header().Set("Content-Type", "text/plain")
		for b := pattern(n); len(b) > 0; b = b[min(len(b), 4096):] {
			w.Write(b[:min(len(b), 4096)])
			flush()
		}
	case "/trailers":
		w.Header().Set("Trailer", "X-Checksum, X-Count")
		io.WriteString(w, "body before trailers")
		w.Header().Set("X-Checksum", "abc123")
		w.Header().Set("X-Count", "20")
	case "/status":
		if n == http.StatusNotModified {
			w.Header().Set("ETag", `"v1"`)
		}
		w.WriteHeader(n)
	case "/headers": // large and repeated, both ways
		w.Header().Set("X-Big", strings.Repeat("b", 8000))
		w.Header()["Set-Cookie"] = []string{"a=1", "b=2", "c=3"}
		w.Header()["X-Multi"] = []string{"one", "two"}
		w.Header().Set("X-Seen-Big", strconv.Itoa(len(r.Header.Get("X-Req-Big"))))
		w.Header().Set("X-Seen-Multi", strings.Join(r.Header.Values("X-Req-Multi"), "|"))
	case "/echo":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		w.Header().Set("X-Received", fmt.Sprintf("%d %x", len(body), sha256.Sum256(body)))
		w.Write(body)
	case "/early": // answered without reading the upload
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		io.WriteString(w, "too large")
	case "/interim":
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "after hints")
	case "/trickle": // the first byte at once, the rest later
		io.WriteString(w, "a")
		flush()
		time.Sleep(200 * time.Millisecond)
		io.WriteString(w, "bc")
	case "/abort": // the server breaks the response mid-body
		w.Header().Set("Content-Length", "100000")
		w.Write(pattern(1000))
		flush()
		panic(http.ErrAbortHandler)
	case "/upgrade": // switches to an echo protocol (HTTP/1.1 only)
		if r.Header.Get("Upgrade") != "echo" {
			w.WriteHeader(http.StatusUpgradeRequired)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		rw.Flush()
		io.Copy(c, rw)
	case "/hold": // answers only once the client has gone
		select {
		case <-r.Context().Done():
			observed(r, "cancelled")
		case <-time.After(5 * time.Second):
			observed(r, "not cancelled")
		}
	case "/upload": // reads the whole upload
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			observed(r, "upload broken")
			return
		}
		observed(r, "upload complete")
	case "/download": // 64 MiB, more than every buffer on the way holds
		chunk := pattern(64 << 10)
		for range 1024 {
			if _, err := w.Write(chunk); err != nil {
				observed(r, "download broken")
				return
			}
		}
		observed(r, "download complete")
	}
}

// observations are what diffApp saw of the requests an abort test names
// by their X-Abort header, one each.
var observations sync.Map // string -> chan string

func observed(r *http.Request, what string) {
	if ch, ok := observations.Load(r.Header.Get("X-Abort")); ok {
		ch.(chan string) <- what
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// diffRequest is one request of the matrix.
type diffRequest struct {
	method, path string
	body         int  // upload size; -1: none
	chunked      bool // the upload's length is not known in advance
	header       map[string]string
}

func (d diffRequest) String() string {
	s := d.method + " " + d.path
	if d.body >= 0 {
		s += fmt.Sprintf(" body=%d", d.body)
	}
	if d.chunked {
		s += " chunked"
	}
	return s
}

var diffRequests = []diffRequest{
	{method: "GET", path: "/body?n=0", body: -1}, {method: "GET", path: "/body?n=1", body: -1},
	{method: "GET", path: "/body?n=65536", body: -1}, {method: "GET", path: "/body?n=10485760", body: -1},
	{method: "HEAD", path: "/body?n=100", body: -1},
	{method: "GET", path: "/stream?n=100000", body: -1},
	{method: "GET", path: "/trailers", body: -1},
	{method: "GET", path: "/status?n=204", body: -1}, {method: "GET", path: "/status?n=304", body: -1},
	{method: "GET", path: "/status?n=503", body: -1},
	{method: "GET", path: "/headers", body: -1, header: map[string]string{"X-Req-Big": strings.Repeat("q", 8000), "X-Req-Multi": "x"}},
	{method: "POST", path: "/echo", body: 0}, {method: "POST", path: "/echo", body: 1},
	{method: "POST", path: "/echo", body: 65536}, {method: "POST", path: "/echo", body: 10 << 20},
	{method: "POST", path: "/echo", body: 65536, chunked: true},
	// (An upload far larger races the server's close even directly: the
	// client may see the response or a reset.)
	{method: "POST", path: "/early", body: 200 << 10},
	{method: "GET", path: "/interim", body: -1},
	{method: "GET", path: "/trickle", body: -1},
	{method: "GET", path: "/abort", body: -1},
}

// diffResult is what a client saw, comparable across paths.
type diffResult struct {
	status   int
	interim  []int
	header   http.Header
	body     string // length and digest
	trailer  http.Header
	broken   bool          // the response failed (or its body broke)
	firstTTB time.Duration // request sent → first body byte
}

// hopByHop and per-connection fields differ by path and protocol; Date by time.
var notCompared = []string{"Date", "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Te", "Trailer"}

func diffDo(t *testing.T, c *http.Client, base string, d diffRequest) diffResult {
	var body io.Reader
	if d.body >= 0 {
		body = bytes.NewReader(pattern(d.body))
		if d.chunked {
			body = io.MultiReader(body) // hides the length
		}
	}
	var res diffResult
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error { res.interim = append(res.interim, code); return nil },
	})
	req, err := http.NewRequestWithContext(ctx, d.method, base+d.path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range d.header {
		req.Header.Set(k, v)
	}
	if d.header["X-Req-Multi"] != "" {
		req.Header.Add("X-Req-Multi", "y")
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		res.broken = true
		return res
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.Peek(1); err == nil {
		res.firstTTB = time.Since(start)
	}
	b, err := io.ReadAll(br)
	res.broken = err != nil
	res.status, res.header, res.trailer = resp.StatusCode, resp.Header.Clone(), resp.Trailer
	for _, k := range notCompared {
		res.header.Del(k)
	}
	res.body = fmt.Sprintf("%d bytes %x", len(b), sha256.Sum256(b))
	return res
}

// diff1_0 sends an HTTP/1.0 GET on a new connection and returns the
// status line's code and the body (until the server closes).
func diff1_0(t *testing.T, addr, path string) (int, string) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: app\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err.Error()
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "broken: " + err.Error()
	}
	return resp.StatusCode, fmt.Sprintf("%d bytes %x", len(b), sha256.Sum256(b))
}

// The same requests, sent directly to a server that speaks both HTTP/1.1
// and h2c and through two meshed proxies (mTLS between them) to an
// HTTP/1.1-only, an h2c-only (its port declared http2, as gRPC's are) and
// a dual server, by HTTP/1.0, HTTP/1.1 and h2c clients, get the same
// status, interim responses, headers (but hop-by-hop ones and Date), body
// bytes and trailers; a response the server breaks is broken on every
// path, and a trickling one's first byte is as early through the mesh.
func TestBehaviourDifferential(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	dual := serveApp(t, diffApp)
	servers := []struct {
		name, addr, declare string
	}{
		{"http1-only", serveOnly(t, false, diffApp), ""},
		{"h2c-only", serveOnly(t, true, diffApp), "http2"},
		{"dual", serveApp(t, diffApp), ""},
	}
	for _, srv := range servers {
		entry, _, _, _ := meshPairWith(t, ids, srv.addr, func(c *config.Config) {
			c.OpaquePorts = nil
			if srv.declare != "" {
				c.ServicePorts = []config.ServicePort{{Port: 8080, TargetPort: port(srv.addr), Protocol: srv.declare}}
			}
		})
		for _, h2 := range []bool{false, true} {
			proto := map[bool]string{false: "HTTP/1.1", true: "h2c"}[h2]
			c := client(h2)
			c.Timeout = 30 * time.Second
			for _, d := range diffRequests {
				t.Run(srv.name+"/"+proto+"/"+d.String(), func(t *testing.T) {
					want := diffDo(t, c, "http://"+dual, d)
					if want.broken != (d.path == "/abort") {
						t.Fatalf("directly: broken=%v", want.broken)
					}
					got := diffDo(t, c, "http://"+entry, d)
					if want.broken != got.broken {
						t.Fatalf("broken: direct %v, mesh %v", want.broken, got.broken)
					}
					if want.broken {
						return
					}
					if got.status != want.status || !slices.Equal(got.interim, want.interim) || got.body != want.body {
						t.Errorf("mesh: %d %v %s; direct: %d %v %s", got.status, got.interim, got.body, want.status, want.interim, want.body)
					}
					if fmt.Sprint(got.header) != fmt.Sprint(want.header) {
						t.Errorf("headers differ:\n mesh   %v\n direct %v", got.header, want.header)
					}
					if fmt.Sprint(got.trailer) != fmt.Sprint(want.trailer) {
						t.Errorf("trailers differ: mesh %v, direct %v", got.trailer, want.trailer)
					}
					if d.path == "/trickle" && got.firstTTB > want.firstTTB+100*time.Millisecond {
						t.Errorf("first byte after %v through the mesh, %v directly", got.firstTTB, want.firstTTB)
					}
				})
			}
		}
		if srv.declare == "" { // an HTTP/1.0 client reaches what speaks HTTP/1
			for _, path := range []string{"/body?n=1", "/body?n=65536", "/stream?n=100000", "/trailers", "/status?n=204"} {
				t.Run(srv.name+"/HTTP/1.0/GET "+path, func(t *testing.T) {
					wc, wb := diff1_0(t, dual, path)
					gc, gb := diff1_0(t, entry, path)
					if gc != wc || gb != wb {
						t.Errorf("mesh: %d %s; direct: %d %s", gc, gb, wc, wb)
					}
				})
			}
		}
	}
}

// diffUpgrade asks for the echo protocol over HTTP/1.1 and, when the
// server switches, sends a line through it; it says what came back.
func diffUpgrade(t *testing.T, addr string) string {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /upgrade HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return resp.Status
	}
	io.WriteString(c, "ping 1")
	echo := make([]byte, len("ping 1"))
	if _, err := io.ReadFull(br, echo); err != nil {
		return fmt.Sprintf("%s, then %v", resp.Status, err)
	}
	return fmt.Sprintf("%s %s, echoed %q", resp.Status, resp.Header.Get("Upgrade"), echo)
}

var abortSeq atomic.Int64

// diffAbort sends a request that the client abandons at stage (before
// the response, mid-upload or mid-download) and returns what the
// application saw of it.
func diffAbort(t *testing.T, c *http.Client, base, stage string) string {
	id := strconv.FormatInt(abortSeq.Add(1), 10)
	seen := make(chan string, 1)
	observations.Store(id, seen)
	defer observations.Delete(id)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var req *http.Request
	switch stage {
	case "before the response":
		req, _ = http.NewRequestWithContext(ctx, "GET", base+"/hold", nil)
		time.AfterFunc(200*time.Millisecond, cancel)
	case "mid-upload":
		pr, pw := io.Pipe()
		go func() {
			pw.Write(pattern(64 << 10))
			time.Sleep(200 * time.Millisecond)
			cancel()
			pw.CloseWithError(context.Canceled)
		}()
		req, _ = http.NewRequestWithContext(ctx, "POST", base+"/upload", pr)
	case "mid-download":
		req, _ = http.NewRequestWithContext(ctx, "GET", base+"/download", nil)
	}
	req.Header.Set("X-Abort", id)
	if resp, err := c.Do(req); err == nil {
		io.CopyN(io.Discard, resp.Body, 64<<10)
		cancel()
		resp.Body.Close()
	}
	select {
	case what := <-seen:
		return what
	case <-time.After(10 * time.Second):
		return "nothing within 10s"
	}
}

// Through two meshed proxies as directly, an HTTP/1.1 Upgrade switches
// protocols and carries bytes both ways, and a client that gives up —
// before the response, mid-upload or mid-download — is seen to give up
// by the application.
func TestBehaviourDifferentialUpgradeAndAborts(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	dual := serveApp(t, diffApp)
	for _, srv := range []struct {
		name, addr, declare string
	}{
		{"http1-only", serveOnly(t, false, diffApp), ""},
		{"h2c-only", serveOnly(t, true, diffApp), "http2"},
	} {
		entry, _, _, _ := meshPairWith(t, ids, srv.addr, func(c *config.Config) {
			c.OpaquePorts = nil
			if srv.declare != "" {
				c.ServicePorts = []config.ServicePort{{Port: 8080, TargetPort: port(srv.addr), Protocol: srv.declare}}
			}
		})
		if srv.declare == "" {
			t.Run(srv.name+"/HTTP/1.1/Upgrade", func(t *testing.T) {
				want, got := diffUpgrade(t, dual), diffUpgrade(t, entry)
				if !strings.Contains(want, `echoed "ping 1"`) || got != want {
					t.Errorf("mesh: %s; direct: %s", got, want)
				}
			})
		}
		for _, h2 := range []bool{false, true} {
			proto := map[bool]string{false: "HTTP/1.1", true: "h2c"}[h2]
			c := client(h2)
			for _, stage := range []string{"before the response", "mid-upload", "mid-download"} {
				t.Run(srv.name+"/"+proto+"/client aborts "+stage, func(t *testing.T) {
					want := diffAbort(t, c, "http://"+dual, stage)
					if want == "nothing within 10s" || strings.Contains(want, "complete") || want == "not cancelled" {
						t.Fatalf("directly, the application saw %q", want)
					}
					if got := diffAbort(t, c, "http://"+entry, stage); got != want {
						t.Errorf("the application saw %q through the mesh, %q directly", got, want)
					}
				})
			}
		}
	}
}
