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
// Its countdown is the process's one hangupClock; the fields after c are
// the clock's, guarded by its lock.
type hangupWatch struct {
	c          net.Conn
	prev, next *hangupWatch // in the clock's list while armed
	listed     bool
	armedAt    time.Time
	br         *bufio.Reader
	cancel     context.CancelFunc
	done       chan struct{} // non-nil while a watching read runs
}

// hangupClock counts down every connection's hang-up watch with one timer.
// A timer per connection fires once per request on a connection that
// carries one request at a time, and each firing is a wake-up of the whole
// process: at 1,000 requests per second over 16 connections that cost
// ~15 µs of CPU per request (bench/run's 1-hop row at 1,000 rps). The
// clock's timer runs only while some request is armed and fires at most
// every watchAfter/4, whatever the number of connections.
type hangupClock struct {
	mu         sync.Mutex
	timer      *time.Timer
	running    bool         // the timer will fire
	head, tail *hangupWatch // armed watches, oldest first
}

// hangups is the process's clock: the fewer timers, the fewer wake-ups.
var hangups hangupClock

// arm starts the countdown for a request that reads from br.
func (h *hangupWatch) arm(br *bufio.Reader, cancel context.CancelFunc) {
	k := &hangups
	k.mu.Lock()
	defer k.mu.Unlock()
	h.armedAt, h.br, h.cancel = time.Now(), br, cancel
	h.listed, h.prev, h.next = true, k.tail, nil
	if k.tail == nil {
		k.head = h
	} else {
		k.tail.next = h
	}
	k.tail = h
	if k.running {
		return
	}
	k.running = true
	if k.timer == nil {
		k.timer = time.AfterFunc(watchAfter, k.tick)
	} else {
		k.timer.Reset(watchAfter)
	}
}

// tick starts watching every request in flight watchAfter or longer, then
// counts down to the oldest one left.
func (k *hangupClock) tick() {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	for h := k.head; h != nil && now.Sub(h.armedAt) >= watchAfter; h = k.head {
		k.unlist(h)
		h.watch()
	}
	if k.head == nil {
		k.running = false
		return
	}
	k.timer.Reset(max(watchAfter-now.Sub(k.head.armedAt), watchAfter/4))
}

// unlist takes h off the clock's list, if it is on it.
func (k *hangupClock) unlist(h *hangupWatch) {
	if !h.listed {
		return
	}
	if h.prev == nil {
		k.head = h.next
	} else {
		h.prev.next = h.next
	}
	if h.next == nil {
		k.tail = h.prev
	} else {
		h.next.prev = h.prev
	}
	h.listed, h.prev, h.next = false, nil, nil
}

// watch reads one byte ahead (bytes that arrive, a pipelined request, stay
// buffered; an error other than our own deadline means the client is gone).
// The clock's lock is held.
func (h *hangupWatch) watch() {
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
	k := &hangups
	k.mu.Lock()
	k.unlist(h)
	done := h.done
	h.done, h.br, h.cancel = nil, nil, nil
	k.mu.Unlock()
	if done != nil {
		h.c.SetReadDeadline(time.Unix(1, 0))
		<-done
		h.c.SetReadDeadline(time.Time{})
	}
}
