package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/h2"
	"github.com/trellis-mesh/trellis/internal/proxy/mesh"
	"golang.org/x/net/http2"
)

func TestUpstreamErrorMapping(t *testing.T) {
	dial := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	for _, tt := range []struct {
		err    error
		status int
		reason string
	}{
		{dial(syscall.ECONNREFUSED), 502, "connection refused"},
		{dial(syscall.EHOSTUNREACH), 503, "host unreachable"},
		{dial(syscall.ENETUNREACH), 503, "host unreachable"},
		{dial(os.ErrDeadlineExceeded), 504, "connect timed out"},
		{fmt.Errorf("wrapped: %w", dial(context.DeadlineExceeded)), 504, "connect timed out"},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, 502, "connection reset by upstream"},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, 504, "response timed out"},
		{io.ErrUnexpectedEOF, 502, "connection closed by upstream"},
		{fmt.Errorf("%w: x509: certificate has expired", mesh.ErrHandshake), 502, "mTLS handshake with the peer proxy failed"},
		{errors.New("malformed response"), 502, "upstream failed"},
		{&ClientBodyError{io.ErrUnexpectedEOF}, 400, reasonClientBody},
		{fmt.Errorf("http2: %w", &ClientBodyError{errors.New("malformed chunked encoding")}), 400, reasonClientBody},
		{headerListRefused(t), 431, reasonHeaderListTooBig},
		{http2.StreamError{StreamID: 11, Code: http2.ErrCodeCancel}, 502, reasonUpstreamCancel},
	} {
		status, reason := UpstreamError(tt.err)
		if status != tt.status || reason != tt.reason {
			t.Errorf("UpstreamError(%v) = %d %q; want %d %q", tt.err, status, reason, tt.status, tt.reason)
		}
	}
}

// headerListRefused is the error the proxy's HTTP/2 client gives for a
// request whose header list is larger than the server advertised.
func headerListRefused(t *testing.T) error {
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.Protocols, srv.Config.MaxHeaderBytes = &h2c, 1024
	srv.Start()
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := h2.NewClientConn(c, h2.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	// A first request, so that the connection has the server's settings.
	first, _ := http.NewRequest("GET", srv.URL, nil)
	if resp, err := cc.RoundTrip(first); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("X-Big", strings.Repeat("x", 64<<10))
	resp, err := cc.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("the server took a header list larger than it advertised")
	}
	return err
}

func TestWriteErrorSpeaksGRPCToGRPCClients(t *testing.T) {
	r := httptest.NewRequest("POST", "/pkg.Svc/Method", nil)
	r.Header.Set("Content-Type", "application/grpc+proto")
	for _, tt := range []struct {
		status int
		reason string
		code   string
	}{
		{http.StatusGatewayTimeout, "response timed out", "4"},
		{http.StatusGatewayTimeout, reasonConnectTimeout, "14"}, // the client's deadline has not passed
		{http.StatusServiceUnavailable, "service has no endpoints", "14"},
		{http.StatusBadGateway, "connection refused", "14"},
		{http.StatusNotFound, "no route", "12"},
		{http.StatusBadRequest, "malformed", "13"},
		{http.StatusForbidden, "unauthorized", "7"},
		{http.StatusInternalServerError, "all backend weights are 0", "2"},
		{http.StatusBadRequest, reasonClientBody, "3"}, // INVALID_ARGUMENT: not retried, not the server's failure
		{http.StatusRequestHeaderFieldsTooLarge, reasonHeaderListTooBig, "3"},
	} {
		w := httptest.NewRecorder()
		WriteError(w, r, tt.status, tt.reason)
		if w.Code != 200 || w.Header().Get("Grpc-Status") != tt.code || w.Header().Get(ErrorHeader) != tt.reason || w.Body.Len() != 0 {
			t.Errorf("%d %q: got %d grpc-status=%q error=%q body %q; want grpc-status %s", tt.status, tt.reason,
				w.Code, w.Header().Get("Grpc-Status"), w.Header().Get(ErrorHeader), w.Body.String(), tt.code)
		}
	}
	// An upstream's CANCEL is CANCELLED, or DEADLINE_EXCEEDED for a call
	// with a deadline (what a gRPC server cancels on).
	for _, tc := range []struct{ timeout, want string }{{"", "1"}, {"300m", "4"}} {
		timeout, want := tc.timeout, tc.want
		w := httptest.NewRecorder()
		r.Header.Del("Grpc-Timeout")
		if timeout != "" {
			r.Header.Set("Grpc-Timeout", timeout)
		}
		WriteError(w, r, http.StatusBadGateway, reasonUpstreamCancel)
		if got := w.Header().Get("Grpc-Status"); got != want {
			t.Errorf("upstream CANCEL, grpc-timeout %q: grpc-status %s, want %s", timeout, got, want)
		}
	}
	r = httptest.NewRequest("GET", "/", nil)
	w := httptest.NewRecorder()
	WriteError(w, r, http.StatusBadGateway, "connection refused")
	if w.Code != 502 || w.Body.String() != "connection refused\n" {
		t.Fatalf("got %d %q", w.Code, w.Body.String())
	}
}

// A request may go to another endpoint when it never left, or when it is
// idempotent, has no body and its connection to the peer proxy broke
// before any answer; never otherwise.
func TestMayRepeat(t *testing.T) {
	lost := h2.ErrConnLost
	dial := &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}
	req := func(method string, body string, peer string) *http.Request {
		var r *http.Request
		if body == "" {
			r = httptest.NewRequest(method, "/", nil)
		} else {
			r = httptest.NewRequest(method, "/", strings.NewReader(body))
		}
		return r.WithContext(WithTarget(r.Context(), "10.0.0.1:8080", peer, ""))
	}
	const peer = "spiffe://cluster.local/ns/default/sa/web"
	for _, tc := range []struct {
		name string
		r    *http.Request
		err  error
		want bool
	}{
		{"a GET whose peer proxy died", req("GET", "", peer), lost, true},
		{"a DELETE whose peer connection was reset", req("DELETE", "", peer), &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{"a POST whose peer proxy died", req("POST", "", peer), lost, false},
		{"a PUT with a body", req("PUT", "x", peer), lost, false},
		{"a GET whose application died (inbound)", req("GET", "", ""), io.ErrUnexpectedEOF, true},
		{"a GET that timed out", req("GET", "", peer), os.ErrDeadlineExceeded, false},
		{"a POST that never left", req("POST", "x", peer), dial, true},
	} {
		if got := mayRepeat(tc.r, tc.err); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
