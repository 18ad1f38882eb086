package detect

import (
	"context"
	"errors"
	"net"
	"os"
	"time"
)

// Detector holds the detection settings.
type Detector struct {
	// Timeout bounds the wait for the client's first bytes; on expiry the
	// connection is opaque.
	Timeout time.Duration
	// ServerFirstDelay is how long a silent client may stay silent before the
	// target is dialed early to see whether the server speaks first. Zero
	// disables the early dial.
	ServerFirstDelay time.Duration
	// MaxWait bounds waiting for either side to speak once the early dial
	// showed the server silent too. Such a connection is not pushed to
	// opaque at Timeout: nothing says it is not a client that dialed ahead
	// of use (a connection pool) and will speak HTTP later. Zero means
	// Timeout.
	MaxWait time.Duration
	// OpaqueUnlessTLS decides opaque from the first byte unless it starts a
	// TLS record: for opaque ports that peer proxies' mTLS may also reach.
	OpaqueUnlessTLS bool
}

// Result is the outcome of detection.
type Result struct {
	Protocol Protocol
	Hello    Hello
	// Client replays the bytes read during detection.
	Client *Conn
	// Upstream is the early connection to the target, if one was dialed; it
	// replays any bytes the server already sent. The caller owns it: use it
	// for opaque traffic or close it.
	Upstream *Conn
	// ServerFirst reports that the server spoke before the client.
	ServerFirst bool
	// TimedOut reports that the client said too little before Timeout.
	TimedOut bool
}

// DialFunc opens a connection to the connection's target.
type DialFunc func(ctx context.Context) (net.Conn, error)

// Detect peeks at client until it can classify the connection. dial may be
// nil when the target is unknown until the protocol is (e.g. HTTP routing).
// An error means the client connection failed (closed or reset) before
// anything could be decided.
func (d Detector) Detect(ctx context.Context, client net.Conn, dial DialFunc) (Result, error) {
	deadline := time.Now().Add(d.Timeout)
	defer client.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 1024)

	var early net.Conn
	var serverBytes []byte
	if dial != nil && d.ServerFirstDelay > 0 && d.ServerFirstDelay < d.Timeout {
		client.SetReadDeadline(time.Now().Add(d.ServerFirstDelay))
		n, err := client.Read(buf[:cap(buf)])
		buf = buf[:n]
		if n == 0 {
			if !isTimeout(err) {
				return Result{}, clientErr(err)
			}
			// The client is silent: does the server speak first?
			res, final, err := d.race(ctx, client, dial, time.Now().Add(max(d.Timeout, d.MaxWait)))
			if err != nil || final {
				return res, err
			}
			// The client spoke after all: classify what it said.
			deadline = time.Now().Add(d.Timeout)
			buf = res.Client.prefix
			if res.Upstream != nil {
				early, serverBytes = res.Upstream.Conn, res.Upstream.prefix
			}
		}
	}

	res := d.classify(client, buf, deadline)
	if early != nil {
		res.Upstream = NewConn(early, serverBytes)
	}
	return res, nil
}

// classify reads from client until Classify decides or the deadline passes.
func (d Detector) classify(client net.Conn, buf []byte, deadline time.Time) Result {
	client.SetReadDeadline(deadline)
	for {
		if d.OpaqueUnlessTLS && len(buf) > 0 && buf[0] != tlsHandshake {
			return Result{Protocol: Opaque, Client: NewConn(client, buf)}
		}
		if p, hello, more := Classify(buf); !more {
			return Result{Protocol: p, Hello: hello, Client: NewConn(client, buf)}
		}
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*cap(buf), MaxPeek))
			copy(grown, buf)
			buf = grown
		}
		n, err := client.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil && n == 0 {
			// Timeout, or the client half-closed: whatever it sent is opaque.
			return Result{Protocol: Opaque, Client: NewConn(client, buf), TimedOut: isTimeout(err)}
		}
	}
}

// race dials the target and waits, until deadline, for whichever side sends
// first. final
// reports that the result is the answer; otherwise the client spoke first and
// its bytes still need classifying.
func (d Detector) race(ctx context.Context, client net.Conn, dial DialFunc, deadline time.Time) (res Result, final bool, err error) {
	up, err := dial(ctx)
	if err != nil {
		// The target is unreachable; detection carries on without it and the
		// later stages report the failure.
		return d.classify(client, nil, deadline), true, nil
	}
	type read struct {
		b   []byte
		err error
	}
	fromServer := make(chan read, 1)
	up.SetReadDeadline(deadline)
	client.SetReadDeadline(deadline)
	go func() {
		b := make([]byte, 1024)
		n, err := up.Read(b)
		if n > 0 {
			client.SetReadDeadline(time.Now()) // wake the client read below
		}
		fromServer <- read{b[:n], err}
	}()
	cb := make([]byte, 1024)
	cn, cerr := client.Read(cb)
	if cn > 0 {
		// The client spoke: stop the server read but keep anything it got.
		up.SetReadDeadline(time.Now())
		s := <-fromServer
		up.SetReadDeadline(time.Time{})
		if len(s.b) == 0 && !isTimeout(s.err) {
			up.Close() // the server hung up; later stages dial again
			return Result{Client: NewConn(client, cb[:cn])}, false, nil
		}
		return Result{Client: NewConn(client, cb[:cn]), Upstream: NewConn(up, s.b)}, false, nil
	}
	// The client read ended without data: the server spoke (and woke it),
	// the deadline passed, or the client went away.
	if !isTimeout(cerr) {
		up.SetReadDeadline(time.Now())
	}
	s := <-fromServer
	up.SetReadDeadline(time.Time{})
	if len(s.b) > 0 {
		return Result{Protocol: Opaque, Client: NewConn(client, nil), Upstream: NewConn(up, s.b), ServerFirst: true}, true, nil
	}
	up.Close()
	if isTimeout(cerr) {
		return Result{Protocol: Opaque, Client: NewConn(client, nil), TimedOut: true}, true, nil
	}
	return Result{}, true, clientErr(cerr)
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// ErrClientClosed reports that the client went away before detection finished.
var ErrClientClosed = errors.New("client closed the connection before sending anything")

func clientErr(err error) error {
	if err == nil {
		return ErrClientClosed
	}
	return errors.Join(ErrClientClosed, err)
}
