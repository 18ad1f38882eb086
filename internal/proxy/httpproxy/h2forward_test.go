package httpproxy

import (
	"context"
	"net/http"
	"reflect"
	"testing"
)

// TestH2RequestHeader: a request with nothing to drop or add shares its
// fields with the upstream request (no copy); anything else is sent as a
// copy without the hop-by-hop fields, with HTTP/2's "TE: trailers", an
// HTTP/1 request's version for a peer proxy, and the client's own fields
// left as they were.
func TestH2RequestHeader(t *testing.T) {
	for _, tc := range []struct {
		name   string
		proto  int
		peer   string
		header http.Header
		want   http.Header
		shared bool
	}{
		{name: "as is", proto: 2, header: http.Header{"User-Agent": {"grpc-go"}, "Te": {"trailers"}, "X-A": {"1"}},
			want: http.Header{"User-Agent": {"grpc-go"}, "Te": {"trailers"}, "X-A": {"1"}}, shared: true},
		{name: "HTTP/1 to a peer", proto: 1, peer: "spiffe://cluster.local/ns/a/sa/b", header: http.Header{"User-Agent": {"curl"}},
			want: http.Header{"User-Agent": {"curl"}, OrigProtoHeader: {"HTTP/1.1"}}},
		{name: "HTTP/1, no peer", proto: 1, header: http.Header{"User-Agent": {"curl"}},
			want: http.Header{"User-Agent": {"curl"}}, shared: true},
		{name: "hop-by-hop", proto: 1, header: http.Header{"User-Agent": {"curl"}, "Connection": {"X-Hop"}, "X-Hop": {"1"}, "Keep-Alive": {"5"}, "Te": {"trailers, deflate"}},
			want: http.Header{"User-Agent": {"curl"}, "Te": {"trailers"}}},
		{name: "no user agent", proto: 2, header: http.Header{"X-A": {"1"}},
			want: http.Header{"X-A": {"1"}, "User-Agent": {""}}},
	} {
		ctx := context.Background()
		if tc.peer != "" {
			ctx = WithTarget(ctx, "10.0.0.1:80", tc.peer, "")
		}
		r, _ := http.NewRequestWithContext(ctx, "GET", "http://app/x", nil)
		r.ProtoMajor, r.ProtoMinor, r.Proto = tc.proto, 1, "HTTP/1.1"
		if tc.proto == 2 {
			r.ProtoMinor, r.Proto = 0, "HTTP/2.0"
		}
		r.Header = tc.header
		before := tc.header.Clone()
		out := h2Request(r, "10.0.0.1:80")
		if !reflect.DeepEqual(out.Header, tc.want) {
			t.Errorf("%s: upstream fields %v, want %v", tc.name, out.Header, tc.want)
		}
		if shared := reflect.ValueOf(out.Header).UnsafePointer() == reflect.ValueOf(r.Header).UnsafePointer(); shared != tc.shared {
			t.Errorf("%s: fields shared %v, want %v", tc.name, shared, tc.shared)
		}
		if !reflect.DeepEqual(r.Header, before) {
			t.Errorf("%s: the client's fields changed to %v", tc.name, r.Header)
		}
	}
}
