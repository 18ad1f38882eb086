package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"unsafe"
)

// Heads the parsers must take themselves: what clients and servers send
// nearly always. Were they to decline these, every request would pay for
// net/http's reader again.
var fastRequests = []string{
	"GET /64 HTTP/1.1\r\nHost: 127.0.0.1:18080\r\nUser-Agent: fortio.org/fortio-1.68.2\r\n\r\n",
	"GET /a/b?c=d&e=%2F HTTP/1.1\r\nHost: web\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
	"POST /orders HTTP/1.1\r\nHost: api:8080\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"id\": 42}\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: web\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\nCache-Control: max-age=1\r\nX:\r\n\r\n",
	"GET //double/slash/caf%C3%A9? HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a/b/../c/./d;p=1/~e_f-g.h HTTP/1.1\r\nHost: a\r\n\r\n",
	"DELETE /x HTTP/1.1\r\nhost: a\r\nx-request-id: 1\r\nX-Request-Id: 2\r\nConnection: close\r\nPragma: no-cache\r\n\r\n",
	"PUT /empty HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTrailer: X\r\nVal: \t obs-text \xff\xfe \t\r\n\r\n",
}

var fastResponses = []string{
	"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 00:00:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 64\r\nConnection: keep-alive\r\n\r\n" +
		"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\nHTTP/1.1 200 OK\r\n",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\ndown",
	"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 304 X\r\nContent-Length: 99\r\n\r\nnext",
}

// Heads they must leave to net/http, which alone handles (or refuses) them.
var slowHeads = []string{
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: folded\r\n  on two lines\r\n\r\n",
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx",
	"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
	"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n",
	"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
	"HTTP/1.1 200 OK\r\n\r\nthe body ends with the connection",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.0 200 \n0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("\nx", 2000) + "\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nCookie: " + strings.Repeat("x", maxFastHead) + "\r\n\r\n",
}

func TestParseHeadTakesTheCommonHeads(t *testing.T) {
	for _, in := range fastRequests {
		if !compareRequest(t, []byte(in)) {
			t.Errorf("declined %q", in)
		}
	}
	for _, in := range fastResponses {
		for _, method := range responseTo {
			if !compareResponse(t, []byte(in), method) {
				t.Errorf("declined the response to %s %q", method, in)
			}
		}
	}
}

func TestParseHeadLeavesTheRestToNetHTTP(t *testing.T) {
	for _, in := range slowHeads {
		if compareRequest(t, []byte(in)) || compareResponse(t, []byte(in), http.MethodGet) {
			t.Errorf("took %q", in)
		}
	}
}

// responseTo are the methods whose responses are framed differently.
var responseTo = []string{http.MethodGet, http.MethodHead, http.MethodConnect}

// FuzzParseHead holds the parsers to net/http's readers: every head they
// take must be one net/http takes too, read into the same message, with
// the same body and the same bytes left for the next message.
//
//	go test -run XXX -fuzz FuzzParseHead ./internal/proxy/httpproxy/
func FuzzParseHead(f *testing.F) {
	for _, in := range fastRequests {
		f.Add([]byte(in))
	}
	for _, in := range fastResponses {
		f.Add([]byte(in))
	}
	for _, in := range slowHeads {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		compareRequest(t, in)
		for _, method := range responseTo {
			compareResponse(t, in, method)
		}
	})
}

// compareRequest parses in as a request head and, if parseRequestHead
// takes it, checks the result against http.ReadRequest's. It reports
// whether parseRequestHead took it.
func compareRequest(t *testing.T, in []byte) bool {
	t.Helper()
	head, br, rest, ok := bufferHead(in)
	if !ok {
		return false
	}
	got := parseRequestHead(context.Background(), head, br)
	if got == nil {
		if !bytes.HasPrefix(peekAll(br), head) {
			t.Fatalf("declined %q but consumed its head", in)
		}
		return false
	}
	wbr := bufio.NewReader(bytes.NewReader(rest))
	want, err := http.ReadRequest(wbr)
	if err == nil {
		err = validFields(want.Header)
	}
	if err != nil {
		t.Fatalf("took %q, which net/http refuses: %v", in, err)
	}
	type view struct {
		Method, RequestURI, Proto, Host string
		ProtoMajor, ProtoMinor          int
		URL                             any
		Header                          http.Header
		ContentLength                   int64
		Close, NoBody                   bool
		TransferEncoding                []string
		Trailer                         http.Header
	}
	of := func(r *http.Request) view {
		return view{r.Method, r.RequestURI, r.Proto, r.Host, r.ProtoMajor, r.ProtoMinor, *r.URL, r.Header, r.ContentLength, r.Close, r.Body == http.NoBody, r.TransferEncoding, r.Trailer}
	}
	if g, w := of(got), of(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("%q:\n got %+v\nwant %+v", in, g, w)
	}
	compareBodies(t, in, got.Body, want.Body, br, wbr)
	return true
}

// compareResponse is compareRequest for a response to a request with
// method.
func compareResponse(t *testing.T, in []byte, method string) bool {
	t.Helper()
	head, br, rest, ok := bufferHead(in)
	if !ok {
		return false
	}
	req := &http.Request{Method: method}
	got := parseResponseHead(head, br, req)
	if got == nil {
		if !bytes.HasPrefix(peekAll(br), head) {
			t.Fatalf("declined %q but consumed its head", in)
		}
		return false
	}
	wbr := bufio.NewReader(bytes.NewReader(rest))
	want, err := http.ReadResponse(wbr, req)
	if err == nil {
		err = validFields(want.Header)
	}
	if err != nil {
		t.Fatalf("took %q (to %s), which net/http refuses: %v", in, method, err)
	}
	type view struct {
		Status, Proto                      string
		StatusCode, ProtoMajor, ProtoMinor int
		Header                             http.Header
		ContentLength                      int64
		Close, NoBody                      bool
		TransferEncoding                   []string
		Trailer                            http.Header
		Request                            *http.Request
	}
	of := func(r *http.Response) view {
		return view{r.Status, r.Proto, r.StatusCode, r.ProtoMajor, r.ProtoMinor, r.Header, r.ContentLength, r.Close, r.Body == http.NoBody, r.TransferEncoding, r.Trailer, r.Request}
	}
	if g, w := of(got), of(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("%q (to %s):\n got %+v\nwant %+v", in, method, g, w)
	}
	compareBodies(t, in, got.Body, want.Body, br, wbr)
	return true
}

// bufferHead does what the proxy does before parsing: it buffers the
// whole head with peekHead (in a small buffer, so that heads outgrow it).
// rest is the input from the head on (peekHead drops the blank lines
// before it), for net/http's reader.
func bufferHead(in []byte) (head []byte, br *bufio.Reader, rest []byte, ok bool) {
	src := bytes.NewReader(in)
	head, br, err := peekHead(bufio.NewReaderSize(src, 64), src, 1<<16, nil)
	if err != nil {
		return nil, nil, nil, false
	}
	return head, br, bytes.TrimLeft(in, "\r\n"), true
}

func peekAll(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// compareBodies reads both bodies to their ends, then what follows them.
func compareBodies(t *testing.T, in []byte, got, want io.Reader, gotConn, wantConn io.Reader) {
	t.Helper()
	gb, gerr := io.ReadAll(got)
	wb, werr := io.ReadAll(want)
	if !bytes.Equal(gb, wb) || (gerr == nil) != (werr == nil) {
		t.Fatalf("%q: body %q, %v; net/http's %q, %v", in, gb, gerr, wb, werr)
	}
	if gerr != nil {
		return // the connection is not reused
	}
	gr, _ := io.ReadAll(gotConn)
	wr, _ := io.ReadAll(wantConn)
	if !bytes.Equal(gr, wr) {
		t.Fatalf("%q: after the body %q; after net/http's %q", in, gr, wr)
	}
}

// TestReadRequestChecks: what the fast parser takes still meets the
// server's own checks, and what it leaves to net/http meets the others.
func TestReadRequestChecks(t *testing.T) {
	for in, want := range map[string]error{
		"GET / HTTP/1.1\r\n\r\n":              errBadHost,
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n": errBadHost,
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc": errSmuggling,
		"GET / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n":                          errHTTP10TE,
		"GET / HTTP/1.0\r\n\r\n": nil,
	} {
		head, br, _, ok := bufferHead([]byte(in))
		if !ok {
			t.Fatalf("%q: no head", in)
		}
		if _, err := readRequest(context.Background(), head, br); !errors.Is(err, want) {
			t.Errorf("%q: %v, want %v", in, err, want)
		}
	}
}

// TestParsedRequestHoldsNoHead: what outlives a request (its method,
// target and Host, kept by metrics and decision logs) must not keep its
// whole head in memory.
func TestParsedRequestHoldsNoHead(t *testing.T) {
	in := "GET /p HTTP/1.1\r\nHost: api\r\nX-Pad: " + strings.Repeat("a", 3000) + "\r\n\r\n"
	head, br, _, _ := bufferHead([]byte(in))
	r := parseRequestHead(context.Background(), head, br)
	if r == nil {
		t.Fatal("declined")
	}
	pad := r.Header.Get("X-Pad")
	start := uintptr(unsafe.Pointer(unsafe.StringData(pad))) - uintptr(strings.Index(in, "aaa"))
	for _, s := range []string{r.Method, r.Host, r.RequestURI, r.URL.Path, r.Proto} {
		if p := uintptr(unsafe.Pointer(unsafe.StringData(s))); p >= start && p < start+uintptr(len(in)) {
			t.Errorf("%q shares the head's memory", s)
		}
	}
}

// TestFixedBody reads a Content-Length body in short reads, from a
// connection that ends early, and from one that fails.
func TestFixedBody(t *testing.T) {
	body := func(src io.Reader, n int64) *fixedBody {
		return &fixedBody{r: bufio.NewReaderSize(src, 16), n: n}
	}
	got, err := io.ReadAll(iotest.OneByteReader(body(iotest.HalfReader(strings.NewReader("0123456789next")), 10)))
	if string(got) != "0123456789" || err != nil {
		t.Errorf("short reads: %q, %v", got, err)
	}
	if got, err := io.ReadAll(body(strings.NewReader("01234"), 10)); string(got) != "01234" || err != io.ErrUnexpectedEOF {
		t.Errorf("early end: %q, %v", got, err)
	}
	failing := io.MultiReader(strings.NewReader("01"), iotest.ErrReader(os.ErrDeadlineExceeded))
	if got, err := io.ReadAll(body(failing, 10)); string(got) != "01" || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("failing connection: %q, %v", got, err)
	}
}
