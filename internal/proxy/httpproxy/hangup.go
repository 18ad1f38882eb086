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
type hangupWatch struct {
	c      net.Conn
	mu     sync.Mutex
	timer  *time.Timer
	armed  bool
	br     *bufio.Reader
	cancel context.CancelFunc
	done   chan struct{} // non-nil while a watching read runs
}

// arm starts the countdown for a request that reads from br.
func (h *hangupWatch) arm(br *bufio.Reader, cancel context.CancelFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.br, h.cancel = true, br, cancel
	if h.timer == nil {
		h.timer = time.AfterFunc(watchAfter, h.watch)
	} else {
		h.timer.Reset(watchAfter)
	}
}

// watch runs when the countdown ends: it reads one byte ahead. Bytes that
// arrive (a pipelined request) stay buffered; an error other than our own
// deadline means the client is gone.
func (h *hangupWatch) watch() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.armed || h.done != nil {
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
	if h.timer != nil {
		h.timer.Stop()
	}
	done := h.done
	h.done = nil
	h.mu.Unlock()
	if done != nil {
		h.c.SetReadDeadline(time.Unix(1, 0))
		<-done
		h.c.SetReadDeadline(time.Time{})
	}
}
