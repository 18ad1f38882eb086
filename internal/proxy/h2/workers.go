package h2

import (
	"net/http"
	"slices"
	"sync"
	"time"
)

// workers runs the server's stream handlers. A goroutine whose handler has
// returned waits a while for the next stream, of any of the server's
// connections, instead of exiting: a handler then starts on a stack its
// predecessors already grew, where a new goroutine's grows — copied frame
// by frame — in every request (7 % of an inbound proxy's CPU at 1,000 rps
// over the mesh, docs/benchmarks.md "Wake-ups between requests"). grpc-go's
// server offers the same (NumStreamWorkers).
//
// At most maxIdleWorkers wait, each for idleWorkerTimeout: a few stacks
// kept while requests keep coming, none a second after they stop.
type workers struct {
	mu   sync.Mutex
	idle []*worker
}

const (
	maxIdleWorkers    = 16
	idleWorkerTimeout = time.Second
)

// worker is a goroutine between handlers; a job sent on next (buffered:
// whoever takes the worker from the idle list sends without blocking)
// is its next.
type worker struct {
	next chan job
}

type job struct {
	st  *stream
	req *http.Request
	h   http.Handler
}

// run serves j on an idle worker, or on a new goroutine.
func (ws *workers) run(j job) {
	ws.mu.Lock()
	if n := len(ws.idle); n > 0 {
		w := ws.idle[n-1]
		ws.idle[n-1] = nil
		ws.idle = ws.idle[:n-1]
		ws.mu.Unlock()
		w.next <- j
		return
	}
	ws.mu.Unlock()
	go ws.work(j)
}

func (ws *workers) work(j job) {
	w := &worker{next: make(chan job, 1)}
	var timer *time.Timer
	for {
		j.st.serve(j.req, j.h)
		j = job{} // nothing of the finished stream kept while waiting

		ws.mu.Lock()
		if len(ws.idle) >= maxIdleWorkers {
			ws.mu.Unlock()
			return
		}
		ws.idle = append(ws.idle, w)
		ws.mu.Unlock()

		if timer == nil {
			timer = time.NewTimer(idleWorkerTimeout)
		} else {
			timer.Reset(idleWorkerTimeout)
		}
		select {
		case j = <-w.next:
			timer.Stop()
			continue
		case <-timer.C:
		}
		if ws.leave(w) {
			return
		}
		j = <-w.next // taken from the list as the timer fired: its job is on the way
	}
}

// leave takes w off the idle list; false if it is no longer there (a
// stream has taken it).
func (ws *workers) leave(w *worker) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for i, x := range ws.idle {
		if x == w {
			ws.idle = slices.Delete(ws.idle, i, i+1)
			return true
		}
	}
	return false
}
