package outbound

import (
	"io"
	"net/http"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
)

const (
	// maxUnprocessedRetries bounds how many other endpoints a request that
	// no application received is sent to.
	maxUnprocessedRetries = 2
	// unprocessedWait bounds how long such a request waits for another
	// endpoint to appear.
	unprocessedWait = time.Second
)

// unprocessed lets the balance stage send a request to another endpoint
// when a proxy answered it with httpproxy.UnprocessedHeader: the request
// provably reached no application — this proxy could not connect to the
// endpoint, or the endpoint's proxy could not connect to its application
// (a Pod shutting down before discovery has dropped it). Sending it again
// is then safe whatever its method (RFC 9110 §9.2.2 is about requests a
// server may have acted on), so it needs no retry policy or budget: only
// a body that can be sent again — none, one of a known length up to
// maxRetryBody (read before the first attempt), or a streamed one that
// was not read at all yet or was read whole within maxRetryBody before
// the answer came.
type unprocessed struct {
	left  int
	body  *replay
	tried []*discover.Endpoint
	next  *discover.Endpoint // the endpoint the retry goes to
}

// newUnprocessed is nil for requests that are never sent twice: protocol
// upgrades and CONNECT tunnels.
func newUnprocessed(r *http.Request) *unprocessed {
	if r.Header.Get("Upgrade") != "" || r.Method == http.MethodConnect {
		return nil
	}
	return &unprocessed{left: maxUnprocessedRetries, body: newReplay(r, true)}
}

// attemptBody is the request body for the next attempt: the client's own
// (recorded) while nothing of it has been read, else a replay.
func (u *unprocessed) attemptBody() (io.ReadCloser, int64) {
	return u.body.next(u.body.rec != nil && u.body.rec.untouched())
}

// retry decides, when the attempt to ep was answered unprocessed, whether
// the request goes to another endpoint of svc, and picks it. When there is
// none yet it waits up to unprocessedWait for one: in a rolling update of
// a single replica the old Pod's application may stop before discovery
// brings the new Pod.
func (u *unprocessed) retry(svc *discover.Service, ep *discover.Endpoint, r *http.Request) bool {
	if u.left == 0 || r.Context().Err() != nil || !(u.body.replayable() || u.body.rec != nil && u.body.rec.untouched()) {
		return false
	}
	u.tried = append(u.tried, ep)
	pick := func() (*discover.Endpoint, error) { return svc.PickOther(u.tried) }
	next, err := pick()
	if err != nil {
		if next, err = waitEndpoint(r.Context(), unprocessedWait, err, pick); err != nil {
			return false
		}
	}
	available(svc, next)
	u.next, u.left = next, u.left-1
	return true
}

// unprocessedWriter holds a response head until it is known whether it is
// a proxy's unprocessed answer that a retry replaces (then it and its body
// are dropped); any other response goes through as it is. The marker
// never reaches the client.
type unprocessedWriter struct {
	w        http.ResponseWriter
	header   http.Header
	canRetry func() bool
	written  bool
	retry    bool
}

func (u *unprocessedWriter) Header() http.Header {
	if u.written && !u.retry {
		return u.w.Header()
	}
	return u.header
}

func (u *unprocessedWriter) WriteHeader(code int) {
	if u.written {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// An interim response: only an application sends those, so the
		// final one will not be replaced. Pass it, and no more of its fields.
		dst := u.w.Header()
		copyHeader(dst, u.header)
		u.w.WriteHeader(code)
		for k := range u.header {
			delete(dst, k)
		}
		return
	}
	u.written = true
	marked := u.header.Get(httpproxy.UnprocessedHeader) != ""
	u.header.Del(httpproxy.UnprocessedHeader)
	if marked && u.canRetry() {
		u.retry = true
		return
	}
	copyHeader(u.w.Header(), u.header)
	u.w.WriteHeader(code)
}

func (u *unprocessedWriter) Write(p []byte) (int, error) {
	if !u.written {
		u.WriteHeader(http.StatusOK)
	}
	if u.retry {
		return len(p), nil
	}
	return u.w.Write(p)
}

func (u *unprocessedWriter) Flush() {
	if u.written && !u.retry {
		if f, ok := u.w.(http.Flusher); ok {
			f.Flush()
		}
	}
}

// Unwrap lets http.ResponseController reach the client's writer.
func (u *unprocessedWriter) Unwrap() http.ResponseWriter { return u.w }
