package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"github.com/trellis-mesh/trellis/internal/proxy/mesh"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"
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
	} {
		status, reason := UpstreamError(tt.err)
		if status != tt.status || reason != tt.reason {
			t.Errorf("UpstreamError(%v) = %d %q; want %d %q", tt.err, status, reason, tt.status, tt.reason)
		}
	}
}

func TestWriteErrorSpeaksGRPCToGRPCClients(t *testing.T) {
	r := httptest.NewRequest("POST", "/pkg.Svc/Method", nil)
	r.Header.Set("Content-Type", "application/grpc+proto")
	w := httptest.NewRecorder()
	WriteError(w, r, http.StatusGatewayTimeout, "connect timed out")
	if w.Code != 200 || w.Header().Get("Grpc-Status") != "4" || w.Header().Get(ErrorHeader) != "connect timed out" {
		t.Fatalf("got %d grpc-status=%q error=%q", w.Code, w.Header().Get("Grpc-Status"), w.Header().Get(ErrorHeader))
	}
	r = httptest.NewRequest("GET", "/", nil)
	w = httptest.NewRecorder()
	WriteError(w, r, http.StatusBadGateway, "connection refused")
	if w.Code != 502 || w.Body.String() != "connection refused\n" {
		t.Fatalf("got %d %q", w.Code, w.Body.String())
	}
}
