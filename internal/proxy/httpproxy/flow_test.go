package httpproxy

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// flushCounter is a ResponseWriter that counts its flushes.
type flushCounter struct {
	*httptest.ResponseRecorder
	flushes atomic.Int32
}

func (w *flushCounter) Flush() { w.flushes.Add(1) }

// TestFlowWriterFlushesALoneHead: a head whose body has not started after
// headWait is flushed on its own; one whose body's first bytes came with it
// is not (it goes out with them), and arms no timer.
func TestFlowWriterFlushesALoneHead(t *testing.T) {
	for _, ready := range []bool{false, true} {
		w := &flushCounter{ResponseRecorder: httptest.NewRecorder()}
		fw := newFlowWriter(w)
		fw.bodyReady = ready
		fw.Header().Set("Content-Length", "3")
		fw.WriteHeader(http.StatusOK)
		if got := fw.timer != nil; got == ready {
			t.Fatalf("body ready %v: head timer armed %v", ready, got)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !ready && w.flushes.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(headWait)
		}
		if !ready && w.flushes.Load() == 0 {
			t.Fatal("a head without its body was never flushed")
		}
		fw.Write([]byte("abc"))
		fw.done()
		if ready && w.flushes.Load() != 0 {
			t.Fatalf("a head that came with its body was flushed alone (%d flushes)", w.flushes.Load())
		}
	}
}
