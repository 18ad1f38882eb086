package h2

import (
	"bytes"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// goroutineID is the calling goroutine's number, from its stack header.
func goroutineID() uint64 {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}

// Requests one after the other are served by the goroutines, and the
// stacks, of those before them; a burst leaves at most maxIdleWorkers waiting; and a
// second without requests leaves none.
func TestStreamHandlersReuseGoroutines(t *testing.T) {
	var mu sync.Mutex
	ids := map[uint64]int{}
	release := make(chan struct{})
	var held sync.WaitGroup
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ids[goroutineID()]++
		mu.Unlock()
		if r.URL.Path == "/hold" {
			held.Done()
			<-release
		}
	})}
	addr := ourServer(t, s, nil)
	client := h2cClient(t)
	get := func(path string) {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	for range 20 {
		get("/")
	}
	// The next request may come before the last handler's goroutine is
	// back in the idle list: two at most, twenty without reuse.
	if len(ids) > 2 {
		t.Errorf("20 requests one after another ran on %d goroutines, want at most 2 (%v)", len(ids), ids)
	}
	const burst = 3 * maxIdleWorkers
	held.Add(burst)
	var done sync.WaitGroup
	for range burst {
		done.Add(1)
		go func() { defer done.Done(); get("/hold") }()
	}
	held.Wait()
	close(release)
	done.Wait()
	testkit.WaitFor(t, "maxIdleWorkers workers to wait idle", func() bool {
		s.workers.mu.Lock()
		defer s.workers.mu.Unlock()
		return len(s.workers.idle) == maxIdleWorkers
	})

	// Every one gone within the idle timeout (and a margin): a worker
	// leaves the list as it exits.
	idle := func() int {
		s.workers.mu.Lock()
		defer s.workers.mu.Unlock()
		return len(s.workers.idle)
	}
	deadline := time.Now().Add(idleWorkerTimeout + 3*time.Second)
	for idle() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := idle(); n != 0 {
		t.Errorf("%v after the last request %d workers still wait; want none", idleWorkerTimeout+3*time.Second, n)
	}
}
