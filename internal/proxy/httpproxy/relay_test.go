package httpproxy

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

// headHolder is a stage's writer that keeps the head in a map of its own
// until WriteHeader, as the outbound retry stages do.
type headHolder struct {
	http.ResponseWriter
	own     http.Header
	written bool
}

func (h *headHolder) Header() http.Header {
	if h.written {
		return h.ResponseWriter.Header()
	}
	return h.own
}

func (h *headHolder) WriteHeader(code int) {
	for k, vs := range h.own {
		h.ResponseWriter.Header()[k] = vs
	}
	h.written = true
	h.ResponseWriter.WriteHeader(code)
}

// Trailers reach the client whether the upstream announced them or not,
// through a writer that held the head in a map of its own; hop-by-hop
// fields and a non-peer's unprocessed mark do not.
func TestRelayResponseTrailers(t *testing.T) {
	trailer := http.Header{"Announced": nil}
	resp := &http.Response{
		StatusCode: http.StatusOK,
		Header: http.Header{"Content-Type": {"application/grpc"}, "Connection": {"X-Hop"}, "X-Hop": {"1"},
			"Keep-Alive": {"timeout=5"}, UnprocessedHeader: {"1"}},
		Trailer: trailer,
		Body: bodyThen(strings.NewReader("hello"), func() {
			trailer["Announced"] = []string{"a"}
			trailer["Grpc-Status"] = []string{"0"} // not announced, as gRPC servers send it
		}),
	}
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/svc/Method", nil)
	if err := relayResponse(&headHolder{ResponseWriter: rec, own: http.Header{}}, r, resp, nil); err != nil {
		t.Fatal(err)
	}
	got := rec.Result()
	body, _ := io.ReadAll(got.Body)
	if string(body) != "hello" {
		t.Errorf("body %q", body)
	}
	for _, k := range []string{"X-Hop", "Keep-Alive", "Connection", UnprocessedHeader} {
		if v, ok := got.Header[k]; ok {
			t.Errorf("%s: %q reached the client", k, v)
		}
	}
	if got.Trailer.Get("Announced") != "a" || got.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("trailers %v, want Announced: a and Grpc-Status: 0", got.Trailer)
	}
}

// bodyThen reads r, then calls end before reporting io.EOF (an HTTP
// client fills the response's trailers then).
func bodyThen(r io.Reader, end func()) io.ReadCloser {
	return io.NopCloser(&endReader{r: r, end: end})
}

type endReader struct {
	r   io.Reader
	end func()
}

func (e *endReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF && e.end != nil {
		e.end()
		e.end = nil
	}
	return n, err
}

// taker is a writer that can take a head's map (as h1Writer can).
type taker struct {
	http.ResponseWriter
	h    http.Header
	took bool
}

func (t *taker) Header() http.Header { return t.h }
func (t *taker) TakeHeader(h http.Header) bool {
	if len(t.h) > 0 {
		return false
	}
	t.h, t.took = h, true
	return true
}

// endToEnd leaves a writer the same fields whether it takes the
// upstream's map or has them copied: never a hop-by-hop field, nor one the
// Connection field names; and a writer already holding fields keeps them.
func TestEndToEnd(t *testing.T) {
	upstream := func() http.Header {
		return http.Header{
			"Connection":   {"close, X-Hop"},
			"X-Hop":        {"1"},
			"Keep-Alive":   {"timeout=5"},
			"Te":           {"trailers"},
			"Content-Type": {"text/plain"},
			"X-App":        {"a", "b"},
		}
	}
	want := http.Header{"Content-Type": {"text/plain"}, "X-App": {"a", "b"}}
	for _, tc := range []struct {
		name     string
		w        http.ResponseWriter
		wantTook bool
		want     http.Header
	}{
		{"taker", &taker{h: http.Header{}}, true, want},
		{"taker holding a field", &taker{h: http.Header{"X-Stage": {"s"}}}, false,
			http.Header{"Content-Type": {"text/plain"}, "X-App": {"a", "b"}, "X-Stage": {"s"}}},
		{"through the metrics recorder", &recorder{ResponseWriter: &taker{h: http.Header{}}}, true, want},
		{"a writer that cannot take", httptest.NewRecorder(), false, want},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := upstream()
			h := endToEnd(tc.w, src)
			if !reflect.DeepEqual(h, tc.want) || !reflect.DeepEqual(tc.w.Header(), tc.want) {
				t.Errorf("writer's head %v (returned %v), want %v", tc.w.Header(), h, tc.want)
			}
			var tk *taker
			switch w := tc.w.(type) {
			case *taker:
				tk = w
			case *recorder:
				tk = w.ResponseWriter.(*taker)
			}
			if tk != nil && tk.took != tc.wantTook {
				t.Errorf("took the upstream's map: %v, want %v", tk.took, tc.wantTook)
			}
		})
	}
}

// A response without a header map leaves the writer its own (a nil map
// would panic the next stage that sets a field).
func TestEndToEndNilHeader(t *testing.T) {
	w := &taker{h: http.Header{}}
	if h := endToEnd(w, nil); h == nil || w.took {
		t.Fatalf("endToEnd(nil) returned %v, took %v; want the writer's own map", h, w.took)
	}
}

// The writers on the proxy's paths take heads; a change of signature must
// not silently turn taking back into copying.
var (
	_ headerTaker = (*h1Writer)(nil)
	_ headerTaker = (*recorder)(nil)
	_ headerTaker = (*flowWriter)(nil)
)

// Through the real path — the HTTP/1 server, the metrics recorder, the
// forwarder and an upstream connection — the client gets the upstream's
// end-to-end fields and none that stay on the upstream's hop, the fields
// its Connection field names included.
func TestRelayThroughTheHTTP1Writer(t *testing.T) {
	const response = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n" +
		"X-App: a\r\nContent-Length: 2\r\n\r\nok"
	f := cannedForwarder(&cannedConn{response: response})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Observe(f, w, r.WithContext(WithTarget(r.Context(), "127.0.0.1:8080", "", "")), func(Outcome) {})
	})
	c := &scriptConn{in: bytes.NewReader([]byte("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"))}
	serveH1(inboundConn(), ServerConfig{MaxHeaderBytes: 4096, HeaderReadTimeout: time.Second, IdleTimeout: time.Second}, slog.New(slog.DiscardHandler), h, c)
	out := c.out.String()
	if n := strings.Count(out, "HTTP/1.1 200 OK\r\n"); n != 2 || strings.Count(out, "X-App: a\r\n") != 2 || strings.Count(out, "\r\n\r\nok") != 2 {
		t.Fatalf("want two 200s with X-App and their bodies, got:\n%s", out)
	}
	for _, hop := range []string{"X-Hop", "Keep-Alive"} {
		if strings.Contains(out, hop) {
			t.Errorf("the client got %s, a field of the upstream's hop:\n%s", hop, out)
		}
	}
}
