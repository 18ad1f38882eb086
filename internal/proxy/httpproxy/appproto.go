package httpproxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// The HTTP version a request travels to an unmeshed target (the
// application, on an inbound proxy) is the one the target speaks, not the
// client's: an HTTP/2 client must reach an HTTP/1.1-only server, and the
// forwarder translates (HTTP/2 ↔ HTTP/1.1: bodies, trailers as chunked
// trailers, streaming). The port's declared protocol decides when there is
// one ("http": HTTP/1.1; "http2", "grpc": h2c); otherwise an HTTP/1
// request stays HTTP/1 (every server speaks it but h2c-only ones, which
// must be declared), and for an HTTP/2 request the target is asked once:
// the h2c preface is answered with SETTINGS by an HTTP/2 server and with an
// HTTP/1.x response (or nothing) by any other.

// Declared protocols of a port (config.ServicePort.Protocol).
const (
	ProtocolHTTP1 = "http"
	ProtocolHTTP2 = "http2"
	ProtocolGRPC  = "grpc"
)

const (
	// probeTimeout bounds one question to a target.
	probeTimeout = 2 * time.Second
	// probeTTL is how long an answer is kept: a target may be replaced by a
	// server of another kind.
	probeTTL = 5 * time.Minute
)

// appProtocols knows which targets speak h2c.
type appProtocols struct {
	declared func(port int) string // a port's declared protocol, "" if none
	dial     func(ctx context.Context, addr string) (net.Conn, error)
	now      func() time.Time

	mu      sync.Mutex
	learned map[string]*probe // target -> its answer, or the question in flight
}

// probe is one question to a target; done closes when h2 is known.
type probe struct {
	done chan struct{}
	h2   bool
	at   time.Time
}

func newAppProtocols(declared func(int) string, dial func(context.Context, string) (net.Conn, error)) *appProtocols {
	return &appProtocols{declared: declared, dial: dial, now: time.Now, learned: map[string]*probe{}}
}

// h2 reports whether r goes to target over h2c.
func (a *appProtocols) h2(r *http.Request, target string) bool {
	if r.Method == http.MethodConnect || upgradeRequested(r) != "" {
		return false // tunnels and upgrades are HTTP/1's
	}
	if a.declared != nil {
		if _, p, err := net.SplitHostPort(target); err == nil {
			port, _ := strconv.Atoi(p)
			switch a.declared(port) {
			case ProtocolHTTP1:
				return false
			case ProtocolHTTP2, ProtocolGRPC:
				return true
			}
		}
	}
	if r.ProtoMajor < 2 {
		return false
	}
	return a.ask(r.Context(), target)
}

// ask returns target's answer, asking it (once for all callers) when it is
// unknown or old. A target that cannot be asked is taken as HTTP/2, the
// request's own version, so that the request fails as it would have.
func (a *appProtocols) ask(ctx context.Context, target string) bool {
	a.mu.Lock()
	p, ok := a.learned[target]
	if !ok || isDone(p.done) && a.now().Sub(p.at) > probeTTL {
		p = &probe{done: make(chan struct{})}
		a.learned[target] = p
		go a.run(target, p)
	}
	a.mu.Unlock()
	select {
	case <-p.done:
		return p.h2
	case <-ctx.Done():
		return true
	}
}

func (a *appProtocols) run(target string, p *probe) {
	h2, known := a.question(target)
	p.h2, p.at = h2, a.now()
	if !known {
		p.at = time.Time{} // ask again next time
	}
	close(p.done)
}

// question sends target the h2c preface and an empty SETTINGS frame and
// reads the first bytes of the answer: known is false when the target
// could not be reached.
func (a *appProtocols) question(target string) (h2, known bool) {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	c, err := a.dial(ctx, target)
	if err != nil {
		return true, false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(probeTimeout))
	var settings [9]byte
	settings[3] = byte(http2.FrameSettings)
	if _, err := c.Write(append([]byte(http2.ClientPreface), settings[:]...)); err != nil {
		return true, false
	}
	var head [5]byte
	n, err := io.ReadFull(c, head[:])
	switch {
	case n == len(head) && head[3] == byte(http2.FrameSettings):
		return true, true
	case err != nil && n == 0 && isTimeout(err):
		return true, false // no answer either way
	default:
		return false, true // an HTTP/1.x answer, or the connection closed on the preface
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
