package h2

import (
	"errors"
	"net/http"
	"os"
	"sync"
	"time"
)

// body is a message body as the peer sends it — a request's at the
// server, a response's at the client: DATA frames' payloads buffered until
// they are read, when the window they took is given back to the peer.
type body struct {
	st   consumer
	mu   sync.Mutex
	cond sync.Cond
	buf  []byte // received and not read, from off
	off  int
	err  error // io.EOF at the end of the stream, or why it broke off
	// closed: the reader closed the body; what arrives is dropped.
	closed bool
	// trailer is the message's Trailer field, filled at the end: with
	// every trailer received (a response, as net/http's client does), or
	// only with those announced (a request, as net/http's server does).
	trailer   *http.Header
	announced bool
	got       http.Header // the trailers received, copied by Read at the end
	// expired: the read deadline passed, and Read fails with
	// os.ErrDeadlineExceeded until another is set; timer sets it, and gen
	// tells its own deadline from a later one.
	expired bool
	timer   *time.Timer
	gen     uint64
}

// consumer is the stream a body belongs to, told of the bytes read.
type consumer interface{ consumed(n int64) }

func newBody(st consumer, trailer *http.Header, announced bool) *body {
	b := &body{st: st, trailer: trailer, announced: announced}
	b.cond.L = &b.mu
	return b
}

// write buffers p (the read loop's frame buffer: copied) and returns how
// many bytes were dropped because the handler closed the body.
func (b *body) write(p []byte) (dropped int64) {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.err != nil {
		return int64(len(p))
	}
	if b.off > 0 && len(b.buf)+len(p) > cap(b.buf) {
		// Room before growing: what was read goes (a reader that stays
		// behind would otherwise keep everything ever received).
		n := copy(b.buf, b.buf[b.off:])
		b.buf, b.off = b.buf[:n], 0
	}
	b.buf = append(b.buf, p...)
	b.cond.Signal()
	return 0
}

// ready reports that a Read would not wait.
func (b *body) ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buf) > b.off || b.err != nil || b.closed || b.expired
}

// finish ends the body with err; trailers (at io.EOF) fill the request's
// announced ones when the handler reads the end, in its own goroutine (the
// request's Trailer is the handler's to read as it likes until then).
func (b *body) finish(err error, trailers http.Header) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return
	}
	b.err, b.got = err, trailers
	b.cond.Broadcast()
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	for b.off == len(b.buf) && b.err == nil && !b.closed && !b.expired {
		b.cond.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		return 0, errBodyClosed
	}
	if b.off == len(b.buf) && b.err == nil {
		b.mu.Unlock()
		return 0, os.ErrDeadlineExceeded
	}
	n := copy(p, b.buf[b.off:])
	b.off += n
	err := b.err
	if b.off < len(b.buf) {
		err = nil
	}
	if err != nil && b.got != nil {
		t := *b.trailer
		for k, vs := range b.got {
			if _, ok := t[k]; ok || !b.announced {
				if t == nil {
					t = http.Header{}
					*b.trailer = t
				}
				t[k] = vs
			}
		}
		b.got = nil
	}
	b.mu.Unlock()
	if n > 0 {
		b.st.consumed(int64(n))
	}
	return n, err
}

// SetReadDeadline makes Read fail with os.ErrDeadlineExceeded, once
// nothing is buffered, from t on; a zero t means never. As net.Conn's, it
// applies to a Read under way too.
func (b *body) SetReadDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.expired = false
	switch d := time.Until(t); {
	case t.IsZero():
	case d <= 0:
		b.expired = true
		b.cond.Broadcast()
	default:
		gen := b.gen
		b.timer = time.AfterFunc(d, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.gen == gen {
				b.expired = true
				b.cond.Broadcast()
			}
		})
	}
	return nil
}

var errBodyClosed = errors.New("http2: read on a closed body")

// Close drops what is buffered and what is still to come.
func (b *body) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	unread := int64(len(b.buf) - b.off)
	b.buf, b.off = nil, 0
	b.cond.Broadcast()
	b.mu.Unlock()
	b.st.consumed(unread)
	return nil
}
