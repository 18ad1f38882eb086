package httpproxy

import (
	"context"
	"net"
	"net/http"

	"github.com/trellis-mesh/trellis/internal/proxy/h2"
)

// h2Pool is package h2's pool of multiplexed connections per target
// address, sending requests again that the upstream provably did not
// process.
type h2Pool struct{ *h2.Pool[string] }

func newH2Pool(dial func(ctx context.Context, addr string) (net.Conn, error), cfg h2.ClientConfig) *h2Pool {
	return &h2Pool{h2.NewPool(dial, cfg)}
}

// RoundTrip sends r on a connection to r.URL.Host. A request the upstream
// provably did not process — refused, or beyond a GOAWAY's last stream —
// is sent once more on another connection if its body can be sent again
// (RFC 9113 §8.7).
func (p *h2Pool) RoundTrip(r *http.Request, got1xx h2.Interim) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		cc, err := p.Get(r.Context(), r.URL.Host)
		if err != nil {
			return nil, err
		}
		resp, err := cc.RoundTripInterim(r, got1xx)
		if err == nil || attempt > 0 || !Unprocessed(err) || !rewind(r) {
			return resp, err
		}
	}
}

// rewind makes r's body ready to be sent again, if it can be.
func rewind(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	if r.GetBody == nil {
		return false
	}
	b, err := r.GetBody()
	if err != nil {
		return false
	}
	r.Body = b
	return true
}
