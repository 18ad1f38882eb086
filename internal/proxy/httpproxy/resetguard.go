package httpproxy

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// An HTTP/2 rapid-reset flood (CVE-2023-44487) opens streams and cancels
// them at once: each costs the proxy a request forwarded upstream and costs
// the client two frames. net/http's server bounds only how many handlers
// run at a time, so a flood whose handlers finish fast is absorbed forever.
// resetGuard watches the frames crossing one HTTP/2 server connection and,
// when most recent streams are reset by the client before the proxy
// answered them, sends GOAWAY ENHANCE_YOUR_CALM and closes the connection,
// as Envoy's premature-reset check and the h2 crate's pending-reset limit do.
//
// Only frame headers are read (9 bytes per frame), never payloads (but
// SETTINGS, see clientReader); the cost is a lock per HEADERS or
// RST_STREAM frame.

// Flood thresholds: a connection is a flood once, among the streams of the
// current window, at least floodMinResets were reset by the client before
// their response began and they are at least half of the streams. The
// window halves every floodWindow streams, so a long-lived connection is
// judged on its recent streams.
const (
	floodMinResets = 100
	floodWindow    = 1000
)

// goAwayWait bounds how long a flood waits for a response frame in flight to
// end before the connection closes without its GOAWAY.
const goAwayWait = time.Second

// errResetFlood ends the server's reads of a flooding connection.
var errResetFlood = errors.New("http2: client reset most streams before their response (rapid reset): connection closed")

const (
	frameRSTStream = 0x3
	frameGoAway    = 0x7
	errCodeCalm    = 0xb // ENHANCE_YOUR_CALM
	clientPreface  = len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
)

// frameScanner finds frame headers in one direction's byte stream.
type frameScanner struct {
	skip int // bytes of payload (or preface) still to pass over
	hdr  [9]byte
	hn   int
}

// scan calls frame for each frame header completed in p and reports whether
// p ends on a frame boundary.
func (s *frameScanner) scan(p []byte, frame func(typ byte, stream uint32)) bool {
	for len(p) > 0 {
		if s.skip > 0 {
			k := min(s.skip, len(p))
			s.skip -= k
			p = p[k:]
			continue
		}
		k := copy(s.hdr[s.hn:], p)
		s.hn += k
		p = p[k:]
		if s.hn < len(s.hdr) {
			break
		}
		s.hn = 0
		s.skip = int(s.hdr[0])<<16 | int(s.hdr[1])<<8 | int(s.hdr[2])
		frame(s.hdr[3], binary.BigEndian.Uint32(s.hdr[5:9])&(1<<31-1))
	}
	return s.skip == 0 && s.hn == 0
}

// resetGuard is one HTTP/2 server connection under watch.
type resetGuard struct {
	net.Conn
	flood func() // counts a flood; may be nil

	in      *clientReader // client→proxy; read goroutine only
	flooded bool          // set by in's frame callback

	mu         sync.Mutex
	unanswered map[uint32]struct{} // client streams without a response frame yet
	lastStream uint32
	opened     int
	premature  int

	wmu      sync.Mutex // serialises writes with the GOAWAY
	out      frameScanner
	boundary bool        // the bytes written so far end on a frame boundary
	calm     atomic.Bool // a GOAWAY is due: written after the frame in flight
	gone     chan struct{}
	goneOnce sync.Once
}

func newResetGuard(c net.Conn, flood func()) *resetGuard {
	g := &resetGuard{Conn: c, flood: flood, unanswered: map[uint32]struct{}{}, boundary: true, gone: make(chan struct{})}
	g.in = newClientReader(c, func(typ byte, stream uint32) { g.flooded = g.clientFrame(typ, stream) || g.flooded })
	return g
}

func (g *resetGuard) Read(p []byte) (int, error) {
	if g.calm.Load() {
		return 0, errResetFlood
	}
	n, err := g.in.Read(p)
	if g.flooded {
		g.goAway()
		return 0, errResetFlood
	}
	return n, err
}

// clientFrame records a frame from the client; true when the connection
// has just become a flood.
func (g *resetGuard) clientFrame(typ byte, stream uint32) bool {
	if typ != frameHeaders && typ != frameRSTStream {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case typ == frameHeaders && stream > g.lastStream && stream%2 == 1:
		g.lastStream = stream
		g.unanswered[stream] = struct{}{}
		if g.opened++; g.opened >= floodWindow {
			g.opened, g.premature = g.opened/2, g.premature/2
		}
	case typ == frameRSTStream:
		if _, ok := g.unanswered[stream]; ok {
			delete(g.unanswered, stream)
			g.premature++
			return g.premature >= floodMinResets && 2*g.premature >= g.opened
		}
	}
	return false
}

// serverFrame records a frame from the proxy: a response (or a reset) has
// begun for its stream.
func (g *resetGuard) serverFrame(typ byte, stream uint32) {
	if typ != frameHeaders && typ != frameRSTStream {
		return
	}
	g.mu.Lock()
	delete(g.unanswered, stream)
	g.mu.Unlock()
}

func (g *resetGuard) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	select {
	case <-g.gone:
		return 0, net.ErrClosed
	default:
	}
	g.boundary = g.out.scan(p, g.serverFrame)
	n, err := g.Conn.Write(p)
	if g.calm.Load() && g.boundary {
		g.sendGoAway()
	}
	return n, err
}

// goAway sends GOAWAY ENHANCE_YOUR_CALM at the next frame boundary of the
// proxy's writes (now, unless a frame is being written) and closes the
// connection; it returns once the connection is closed.
func (g *resetGuard) goAway() {
	if g.flood != nil {
		g.flood()
	}
	g.calm.Store(true) // a writer sends it once its frame ends
	deadline := time.Now().Add(goAwayWait)
	for {
		if g.wmu.TryLock() {
			if g.boundary {
				g.sendGoAway()
			}
			g.wmu.Unlock()
		}
		select {
		case <-g.gone:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			g.close()
			return
		}
	}
}

// sendGoAway writes the GOAWAY and closes the connection; wmu is held.
func (g *resetGuard) sendGoAway() {
	g.mu.Lock()
	last := g.lastStream
	g.mu.Unlock()
	var f [17]byte
	f[2] = 8 // payload length
	f[3] = frameGoAway
	binary.BigEndian.PutUint32(f[9:13], last)
	binary.BigEndian.PutUint32(f[13:17], errCodeCalm)
	g.Conn.SetWriteDeadline(time.Now().Add(goAwayWait))
	g.Conn.Write(f[:])
	g.close()
}

func (g *resetGuard) close() {
	g.goneOnce.Do(func() {
		close(g.gone)
		g.Conn.Close()
	})
}
