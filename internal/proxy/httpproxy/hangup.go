package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// watchAfter is how long a request may be in flight before the server
// starts watching its client for a hang-up. Watching costs a goroutine and a
// read per request, so quick exchanges — nearly all of them — never pay.
const watchAfter = 20 * time.Millisecond

// hangupWatch notices an HTTP/1 client closing its connection while its
// request (one without a body, so nothing else reads the connection) is
// still in flight, and cancels the request so the upstream is abandoned too.
//
// Its countdown is one timer per connection that is not stopped when a
// request ends: moving a timer twice per request cost more than letting it
// fire once per watchAfter on a busy connection and look at the request
// in flight then.
type hangupWatch struct {
	c       net.Conn
	mu      sync.Mutex
	timer   *time.Timer
	pending bool // the timer will fire
	armed   bool
	armedAt time.Time
	br      *bufio.Reader
	cancel  context.CancelFunc
	done    chan struct{} // non-nil while a watching read runs
}

// arm starts the countdown for a request that reads from br.
func (h *hangupWatch) arm(br *bufio.Reader, cancel context.CancelFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.armedAt, h.br, h.cancel = true, time.Now(), br, cancel
	switch {
	case h.timer == nil:
		h.timer = time.AfterFunc(watchAfter, h.watch)
	case !h.pending:
		h.timer.Reset(watchAfter)
	}
	h.pending = true
}

// watch runs when the countdown ends: for a request in flight watchAfter
// or longer it reads one byte ahead (bytes that arrive, a pipelined
// request, stay buffered; an error other than our own deadline means the
// client is gone); for a younger one it counts down the rest.
func (h *hangupWatch) watch() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pending = false
	if !h.armed || h.done != nil {
		return
	}
	if rest := watchAfter - time.Since(h.armedAt); rest > 0 {
		h.timer.Reset(rest)
		h.pending = true
		return
	}
	done := make(chan struct{})
	h.done = done
	br, cancel := h.br, h.cancel
	go func() {
		defer close(done)
		if _, err := br.Peek(1); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel()
		}
	}()
}

// disarm stops watching; after it returns nothing else reads the connection.
func (h *hangupWatch) disarm() {
	h.mu.Lock()
	h.armed = false
	done := h.done
	h.done = nil
	h.mu.Unlock()
	if done != nil {
		h.c.SetReadDeadline(time.Unix(1, 0))
		<-done
		h.c.SetReadDeadline(time.Time{})
	}
}

// stop ends the countdown for good, when the connection is done.
func (h *hangupWatch) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed = false
	if h.timer != nil {
		h.timer.Stop()
	}
}
