package detect

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Detector holds the detection settings.
type Detector struct {
	// Timeout bounds the wait for the client's first bytes; on expiry the
	// connection is opaque. It also bounds how long the early connection of
	// server-first probing is held while both sides stay silent.
	Timeout time.Duration
	// ServerFirstDelay is how long a silent client may stay silent before the
	// target is dialed early to see whether the server speaks first. Zero
	// disables the early dial.
	ServerFirstDelay time.Duration
	// MaxWait bounds waiting for the client once the early dial showed the
	// server silent too. Such a connection is not pushed to opaque at
	// Timeout: nothing says it is not a client that dialed ahead of use (a
	// connection pool) and will speak HTTP later. The early connection is
	// released at Timeout all the same, so a silent client never holds a
	// connection to the target. Zero means Timeout.
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
	// replays any bytes the server already sent. The caller uses it for
	// opaque traffic or closes it, and closes it when the connection ends.
	Upstream *Conn
	// ServerFirst reports that the server spoke before the client.
	ServerFirst bool
	// TimedOut reports that the client said too little before Timeout.
	TimedOut bool
}

// DialFunc opens a connection to the connection's target.
type DialFunc func(ctx context.Context) (net.Conn, error)

// ErrClientClosed reports that the client went away before detection finished.
var ErrClientClosed = errors.New("client closed the connection before sending anything")

// ErrStopped reports that ctx ended (the proxy drains or stops) before the
// client said enough to decide; nothing of the connection was forwarded.
var ErrStopped = errors.New("protocol detection stopped: the proxy is shutting down")

// maxEmptyReads bounds consecutive reads that return neither bytes nor an
// error (which io.Reader allows but a socket never does) before detection
// gives up on the connection instead of looping.
const maxEmptyReads = 100

// Detect peeks at client until it can classify the connection. dial may be
// nil when the target is unknown until the protocol is (e.g. HTTP routing).
// An error means the client connection failed (closed or reset) or ctx
// ended before anything could be decided.
//
// Detection is a bounded state machine: every read has room for at least
// one byte and a deadline, every state ends on bytes, a deadline, an error
// or ctx, and the buffer never grows past MaxPeek.
func (d Detector) Detect(ctx context.Context, client net.Conn, dial DialFunc) (Result, error) {
	p := &peeker{conn: client, buf: make([]byte, 0, 1024)}
	unregister := context.AfterFunc(ctx, p.stop)
	defer func() {
		unregister()
		p.finish()
	}()

	if dial == nil || d.ServerFirstDelay <= 0 || d.ServerFirstDelay >= d.Timeout {
		return p.classify(d, time.Now().Add(d.Timeout))
	}
	// The client usually speaks at once: wait a little for it.
	switch err := p.fill(time.Now().Add(d.ServerFirstDelay)); {
	case err == nil:
		return p.classify(d, time.Now().Add(d.Timeout))
	case errors.Is(err, ErrStopped):
		return Result{}, err
	case !isTimeout(err):
		return Result{}, clientErr(err)
	}
	// The client is silent: does the server speak first?
	return d.race(ctx, p, dial)
}

// race dials the target and waits for whichever side sends first: the
// server (a server-first protocol, opaque), the client (classified as
// usual), or neither (opaque once the client has been silent for MaxWait).
// The early connection is held for Timeout at most.
func (d Detector) race(ctx context.Context, p *peeker, dial DialFunc) (Result, error) {
	start := time.Now()
	up, err := dial(ctx)
	if err != nil {
		if p.stopped() {
			return Result{}, ErrStopped
		}
		// The target is unreachable; detection carries on without it and
		// the later stages report the failure.
		return p.classify(d, start.Add(d.Timeout))
	}
	probe := newProbe(up, p, start.Add(d.Timeout))
	err = p.fill(start.Add(max(d.Timeout, d.MaxWait)))
	switch {
	case err == nil: // the client spoke first
		early := probe.keep()
		p.clear(errServerSpoke) // the probe is done: no more wake-ups from it
		if early != nil {
			res, err := p.classify(d, time.Now().Add(d.Timeout))
			if err != nil {
				early.Close()
				return res, err
			}
			res.Upstream = early
			return res, nil
		}
		return p.classify(d, time.Now().Add(d.Timeout))
	case errors.Is(err, errServerSpoke):
		return Result{Protocol: Opaque, Client: NewConn(p.conn, nil), Upstream: probe.keep(), ServerFirst: true}, nil
	case isTimeout(err):
		if early := probe.keep(); early != nil && len(early.prefix) > 0 {
			// The server spoke just as the client's wait ended.
			return Result{Protocol: Opaque, Client: NewConn(p.conn, nil), Upstream: early, ServerFirst: true}, nil
		} else if early != nil {
			early.Close()
		}
		return Result{Protocol: Opaque, Client: NewConn(p.conn, nil), TimedOut: true}, nil
	default:
		probe.release()
		if errors.Is(err, ErrStopped) {
			return Result{}, err
		}
		return Result{}, clientErr(err)
	}
}

// errServerSpoke ends a client read because the early connection's server
// sent its greeting.
var errServerSpoke = errors.New("the server spoke first")

// peeker reads a connection's first bytes into a bounded buffer. Another
// goroutine may wake a pending read (stop, or the server spoke) by setting a
// reason and then the read deadline; a read arms its deadline before
// checking for a reason, so no wake-up is lost.
type peeker struct {
	conn   net.Conn
	buf    []byte
	reason atomic.Pointer[error]

	mu       sync.Mutex
	finished bool // detection returned: wake-ups no longer touch conn
}

func (p *peeker) wake(reason error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.reason.CompareAndSwap(nil, &reason)
	p.conn.SetReadDeadline(time.Now())
}

// clear forgets reason if it is the one set.
func (p *peeker) clear(reason error) {
	if r := p.reason.Load(); r != nil && *r == reason {
		p.reason.CompareAndSwap(r, nil)
	}
}

// finish ends detection: the connection's deadline is cleared for the
// stages after it, and later wake-ups are ignored.
func (p *peeker) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finished = true
	p.conn.SetReadDeadline(time.Time{})
}

func (p *peeker) stop() { p.wake(ErrStopped) }

func (p *peeker) stopped() bool {
	r := p.reason.Load()
	return r != nil && *r == ErrStopped
}

// read reads once, into room for at least one byte, until deadline. It
// returns nil when bytes arrived or after an empty read.
func (p *peeker) read(deadline time.Time, empty *int) error {
	if len(p.buf) == cap(p.buf) {
		if cap(p.buf) >= MaxPeek {
			return io.ErrShortBuffer // unreachable: Classify decides at MaxPeek
		}
		grown := make([]byte, len(p.buf), min(max(2*cap(p.buf), 1024), MaxPeek))
		copy(grown, p.buf)
		p.buf = grown
	}
	p.conn.SetReadDeadline(deadline)
	if r := p.reason.Load(); r != nil {
		return *r
	}
	n, err := p.conn.Read(p.buf[len(p.buf):cap(p.buf)])
	p.buf = p.buf[:len(p.buf)+n]
	switch {
	case n > 0:
		*empty = 0
		return nil
	case err == nil:
		if *empty++; *empty >= maxEmptyReads {
			return io.ErrNoProgress
		}
		return nil
	case isTimeout(err):
		if r := p.reason.Load(); r != nil {
			return *r
		}
	}
	return err
}

// fill reads until the client has sent something or deadline passes.
func (p *peeker) fill(deadline time.Time) error {
	var empty int
	for len(p.buf) == 0 {
		if err := p.read(deadline, &empty); err != nil {
			return err
		}
	}
	return nil
}

// classify reads from the client until Classify decides or deadline
// passes; a client that stops sending (deadline or half-close) is opaque
// with whatever it sent.
func (p *peeker) classify(d Detector, deadline time.Time) (Result, error) {
	var empty int
	for {
		if d.OpaqueUnlessTLS && len(p.buf) > 0 && p.buf[0] != tlsHandshake {
			return Result{Protocol: Opaque, Client: NewConn(p.conn, p.buf)}, nil
		}
		if proto, hello, more := Classify(p.buf); !more {
			return Result{Protocol: proto, Hello: hello, Client: NewConn(p.conn, p.buf)}, nil
		}
		switch err := p.read(deadline, &empty); {
		case err == nil:
		case errors.Is(err, ErrStopped):
			return Result{}, err
		case len(p.buf) == 0 && !isTimeout(err):
			return Result{}, clientErr(err)
		case errors.Is(err, io.ErrNoProgress):
			return Result{}, clientErr(err)
		default:
			return Result{Protocol: Opaque, Client: NewConn(p.conn, p.buf), TimedOut: isTimeout(err)}, nil
		}
	}
}

// probe reads the early connection's first bytes in the background until
// its deadline, waking the client's read when the server speaks. If the
// server stays silent until then, or hangs up, the probe closes the
// connection itself: a silent client never holds one.
type probe struct {
	up       net.Conn
	wanted   atomic.Bool // the client spoke; keep the connection
	done     chan struct{}
	greeting []byte
	open     bool // up is still open (valid after done)
}

func newProbe(up net.Conn, client *peeker, deadline time.Time) *probe {
	pr := &probe{up: up, done: make(chan struct{})}
	up.SetReadDeadline(deadline)
	go func() {
		defer close(pr.done)
		b := make([]byte, 1024)
		n, err := up.Read(b)
		pr.greeting = b[:n]
		if n > 0 {
			pr.open = true
			client.wake(errServerSpoke)
			return
		}
		if isTimeout(err) && pr.wanted.Load() {
			pr.open = true // stopped by keep
			return
		}
		up.Close()
	}()
	return pr
}

// keep stops the probe and returns the early connection replaying what the
// server sent, or nil if the probe already let it go.
func (pr *probe) keep() *Conn {
	pr.wanted.Store(true)
	pr.up.SetReadDeadline(time.Now())
	<-pr.done
	if !pr.open {
		return nil
	}
	pr.up.SetReadDeadline(time.Time{})
	return NewConn(pr.up, pr.greeting)
}

// release stops the probe and closes the early connection.
func (pr *probe) release() {
	if c := pr.keep(); c != nil {
		c.Close()
	}
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func clientErr(err error) error {
	if err == nil {
		return ErrClientClosed
	}
	return errors.Join(ErrClientClosed, err)
}
