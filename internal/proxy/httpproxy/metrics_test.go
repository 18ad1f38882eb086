package httpproxy

import (
	"net/http"
	"testing"
)

// grpc-status counts only on gRPC responses, and only as a code gRPC
// defines: what an upstream sends cannot add label values without bound.
func TestGRPCStatus(t *testing.T) {
	for _, tt := range []struct {
		contentType, head, trailer string
		want                       int
	}{
		{"application/grpc", "", "0", 0},
		{"application/grpc+proto", "14", "", 14},
		{"application/grpc", "", "", -1},
		{"application/grpc", "", "16", 16},
		{"application/grpc", "", "17", 2},
		{"application/grpc", "", "-1", 2},
		{"application/grpc", "", "918273", 2},
		{"application/grpc", "", "nope", 2},
		{"application/json", "", "7", -1},
		{"", "7", "", -1},
	} {
		h := http.Header{}
		if tt.contentType != "" {
			h.Set("Content-Type", tt.contentType)
		}
		if tt.head != "" {
			h.Set("Grpc-Status", tt.head)
		}
		if tt.trailer != "" {
			h.Set(http.TrailerPrefix+"Grpc-Status", tt.trailer)
		}
		if got := GRPCStatus(h); got != tt.want {
			t.Errorf("%+v: %d; want %d", tt, got, tt.want)
		}
	}
}
