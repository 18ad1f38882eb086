package outbound

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
)

// maxRetryBody is the largest request body buffered so the request can be
// retried; larger (or unknown-length, longer) bodies are not retried.
const maxRetryBody = 64 << 10

// replay is a request body kept for sending again: read whole up front
// when its length is known and small (hedges and mirrors need that), else
// recorded while the first attempt streams it, so a retry can replay it
// if it turned out small and complete.
type replay struct {
	r     *http.Request
	whole bool // buf holds the whole body (or there is none)
	buf   []byte
	rec   *recorder // streaming bodies
}

func newReplay(r *http.Request, wanted bool) *replay {
	b := &replay{r: r}
	switch {
	case !wanted || r.Header.Get("Upgrade") != "" || r.Method == http.MethodConnect:
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
		b.whole = true
	case r.ContentLength > 0 && r.ContentLength <= maxRetryBody && !strings.EqualFold(r.Header.Get("Expect"), "100-continue"):
		// (A client that asked to be told to go on is told by the upstream.)
		buf, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
		switch {
		case err == nil && int64(len(buf)) == r.ContentLength:
			b.whole, b.buf = true, buf
		case err != nil:
			// The client broke its body: what was read goes first, then
			// the error (the body's next read might say EOF instead, and
			// the request would look whole but short).
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(buf), errReader{err}), r.Body}
		default: // short, then whatever the body says
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		}
	default: // streamed, or too long to hold: recorded while it streams
		b.rec = &recorder{body: r.Body}
	}
	return b
}

// errReader fails every read with its error.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// bytes is the whole body (whole only).
func (b *replay) bytes() []byte { return b.buf }

// replayable reports whether the body can be sent again.
func (b *replay) replayable() bool { return b.whole || b.rec != nil && b.rec.complete() }

// next is the body for an attempt: the first attempt of a streaming body
// reads (and records) the client's; others replay.
func (b *replay) next(first bool) (io.ReadCloser, int64) {
	switch {
	case b.whole && len(b.buf) == 0:
		return http.NoBody, 0 // no body: not one of unknown length
	case b.whole:
		return io.NopCloser(bytes.NewReader(b.buf)), int64(len(b.buf))
	case b.rec != nil && first:
		return b.rec, -1
	case b.rec != nil:
		data := b.rec.data()
		return io.NopCloser(bytes.NewReader(data)), int64(len(data))
	}
	return b.r.Body, b.r.ContentLength
}

// recorder passes a streaming body through, keeping a copy of up to
// maxRetryBody bytes.
type recorder struct {
	body     io.ReadCloser
	mu       sync.Mutex
	buf      []byte
	read     bool // a Read has begun
	overflow bool
	eof      bool
}

func (rc *recorder) Read(p []byte) (int, error) {
	rc.mu.Lock()
	rc.read = true
	rc.mu.Unlock()
	n, err := rc.body.Read(p)
	rc.mu.Lock()
	if !rc.overflow {
		if len(rc.buf)+n > maxRetryBody {
			rc.overflow, rc.buf = true, nil
		} else {
			rc.buf = append(rc.buf, p[:n]...)
		}
	}
	if err == io.EOF {
		rc.eof = true
	}
	rc.mu.Unlock()
	return n, err
}

func (rc *recorder) Close() error { return rc.body.Close() }

func (rc *recorder) complete() bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.eof && !rc.overflow
}

// untouched reports whether nothing has read the body yet.
func (rc *recorder) untouched() bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return !rc.read
}

func (rc *recorder) data() []byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.buf
}
