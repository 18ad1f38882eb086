package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// errClosed is returned by operations on a closed DB.
var errClosed = errors.New("store: database is closed")

// entry is one remembered event with its resource version.
type entry struct {
	rv uint64
	ev Event
}

// hub fans events out to watchers and remembers the most recent ones.
// Events are published with strictly consecutive resource versions, so the
// history always covers (oldest-1, rv].
type hub struct {
	mu       sync.Mutex
	closed   bool
	rv       uint64  // resource version of the newest event (or of the store at open)
	hist     []entry // ring buffer, oldest at start once full
	start    int
	size     int
	watchers map[*watcher]struct{}
}

// watcher is one Watch call's subscription.
type watcher struct {
	kind string
	ch   chan Event
	done chan struct{} // closed when the watcher is dropped
}

func newHub(rv uint64, historySize int) *hub {
	return &hub{rv: rv, size: historySize, watchers: map[*watcher]struct{}{}}
}

// publish records ev and delivers it without blocking; watchers whose buffer
// is full are dropped. Callers publish in resource-version order.
func (h *hub) publish(rv uint64, ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := entry{rv: rv, ev: ev}
	if len(h.hist) < h.size {
		h.hist = append(h.hist, e)
	} else {
		h.hist[h.start] = e
		h.start = (h.start + 1) % h.size
	}
	h.rv = rv
	for w := range h.watchers {
		if !w.offer(e) {
			h.drop(w)
		}
	}
}

// offer sends e to w if it matches w's kind; it reports false if w's buffer is full.
func (w *watcher) offer(e entry) bool {
	if w.kind != "" && w.kind != e.ev.Object.Kind {
		return true
	}
	select {
	case w.ch <- Event{Type: e.ev.Type, Object: e.ev.Object.clone()}:
		return true
	default:
		return false
	}
}

// drop unregisters w and closes its channel. h.mu must be held.
func (h *hub) drop(w *watcher) {
	if _, ok := h.watchers[w]; !ok {
		return
	}
	delete(h.watchers, w)
	close(w.ch)
	close(w.done)
}

// watch subscribes to events of kind (all if "") with rv > fromRV, replaying
// remembered history first. buf is the channel capacity.
func (h *hub) watch(ctx context.Context, kind string, fromRV uint64, buf int) (<-chan Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errClosed
	}
	if fromRV < h.rv && (len(h.hist) == 0 || h.hist[h.start].rv > fromRV+1) {
		oldest := h.rv + 1
		if len(h.hist) > 0 {
			oldest = h.hist[h.start].rv
		}
		return nil, fmt.Errorf("store: watch from %d (oldest remembered event is %d): %w", fromRV, oldest, ErrGone)
	}
	w := &watcher{kind: kind, ch: make(chan Event, buf), done: make(chan struct{})}
	h.watchers[w] = struct{}{}
	for i := range h.hist {
		e := h.hist[(h.start+i)%len(h.hist)]
		if e.rv > fromRV && !w.offer(e) {
			h.drop(w) // already too far behind; the caller resumes from its last event
			return w.ch, nil
		}
	}
	go func() {
		select {
		case <-ctx.Done():
			h.mu.Lock()
			h.drop(w)
			h.mu.Unlock()
		case <-w.done:
		}
	}()
	return w.ch, nil
}

// close drops every watcher and refuses new ones.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for w := range h.watchers {
		h.drop(w)
	}
}
