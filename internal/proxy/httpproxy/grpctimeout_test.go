package httpproxy

import (
	"net/http"
	"testing"
	"time"
)

func TestGRPCTimeout(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"1S": time.Second, "250m": 250 * time.Millisecond, "3M": 3 * time.Minute, "2H": 2 * time.Hour,
		"99999999u": 99999999 * time.Microsecond, "5n": 5, "0m": 0,
	} {
		got, ok := GRPCTimeout(http.Header{"Grpc-Timeout": {v}})
		if !ok || got != want {
			t.Errorf("%q: %v %v, want %v", v, got, ok, want)
		}
	}
	for _, v := range []string{"", "S", "10", "1x", "-1S", "123456789S", "1.5S"} {
		if d, ok := GRPCTimeout(http.Header{"Grpc-Timeout": {v}}); ok {
			t.Errorf("%q: accepted as %v", v, d)
		}
	}
	for _, d := range []time.Duration{0, 5, 1500 * time.Microsecond, 42 * time.Second, 3 * time.Hour, 1000 * time.Hour} {
		s := FormatGRPCTimeout(d)
		back, ok := GRPCTimeout(http.Header{"Grpc-Timeout": {s}})
		if !ok || back < d || len(s) > 9 {
			t.Errorf("%v -> %q -> %v %v", d, s, back, ok)
		}
	}
}
