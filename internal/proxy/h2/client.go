package h2

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// ClientConfig tunes a client connection.
type ClientConfig struct {
	// StreamWindow and ConnWindow are how much response body the server
	// may send ahead on one stream and on the connection (defaults 4 MiB
	// and 16 MiB).
	StreamWindow int32
	ConnWindow   int32
	// MaxHeaderBytes bounds a response's header list (default 1 MiB).
	MaxHeaderBytes uint32
	// IdleTimeout closes the connection once it has carried no request
	// for that long; 0 means never.
	IdleTimeout time.Duration
	// PingAfter sends a PING when nothing was received for that long while
	// requests are in flight, and PingTimeout closes the connection if
	// nothing arrives within that after it; 0 disables the check.
	PingAfter, PingTimeout time.Duration
	// WriteTimeout closes the connection when the server takes nothing
	// written to it for that long (it stopped reading); default 60 s.
	WriteTimeout time.Duration
	// MaxStreams, if set, bounds the streams the connection carries at
	// once below the server's SETTINGS_MAX_CONCURRENT_STREAMS: a server
	// counts a stream until its handler is done, a moment after the client
	// saw it end, and refuses new ones meanwhile.
	MaxStreams uint32
	// ExpectContinueWait is how long a request announcing "Expect:
	// 100-continue" holds its body back for the server's 100 (default 1 s).
	ExpectContinueWait time.Duration
}

// Errors of a request the server provably did not process (RFC 9113
// §8.7): it may be sent again, on another connection.
var (
	// ErrRefused: the server refused the stream (REFUSED_STREAM), or its
	// GOAWAY's last stream is below it.
	ErrRefused = errors.New("http2: request not processed by the server (REFUSED_STREAM or beyond its GOAWAY)")
	// ErrConnUnusable: the connection was closing, or at its server's
	// stream limit, before the request could be sent.
	ErrConnUnusable = errors.New("http2: client connection not usable")
)

// ErrConnLost is a connection that broke under requests in flight.
var ErrConnLost = errors.New("http2: client connection lost")

// ErrHeaderListTooLarge is a request whose header list is larger than the
// server announced it accepts (SETTINGS_MAX_HEADER_LIST_SIZE).
var ErrHeaderListTooLarge = errors.New("http2: request header list larger than the server accepts")

// ClientConn is an HTTP/2 client connection carrying many requests at
// once. A goroutine reads its frames and hands each response to its
// request; requests write their own frames.
type ClientConn struct {
	cfg  ClientConfig
	conn net.Conn
	fr   *http2.Framer
	hr   *headerReader // reads fr, header blocks whole

	mu          sync.Mutex
	o           output
	streams     map[uint32]*clientStream
	nextID      uint32
	reserved    int    // streams promised by Reserve, not opened yet
	maxStreams  uint32 // the server's SETTINGS_MAX_CONCURRENT_STREAMS
	peerWindow  int32  // the server's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxList uint32 // the server's SETTINGS_MAX_HEADER_LIST_SIZE, 0 if none
	recv        inflow
	goAway      bool      // the server sent GOAWAY: no new streams
	err         error     // why the connection ended, once it has
	idle        idleTimer // armed when the connection first becomes idle

	lastRead atomic.Int64 // unix nanoseconds of the last frame read
	pinged   atomic.Bool  // a health PING is out: a read deadline is set (both changed under mu)
	health   *time.Timer
}

const (
	defaultClientStreamWindow = 4 << 20
	defaultClientConnWindow   = 16 << 20
	defaultClientMaxHeader    = 1 << 20
	initialMaxStreams         = 100 // until the server's SETTINGS say (as net/http)
)

// NewClientConn starts HTTP/2 on c, a connection to a server that speaks
// it (prior knowledge, or ALPN "h2"), and returns at once: requests may be
// sent before the server's SETTINGS arrive.
func NewClientConn(c net.Conn, cfg ClientConfig) (*ClientConn, error) {
	cfg.StreamWindow = orDefault(cfg.StreamWindow, defaultClientStreamWindow)
	cfg.ConnWindow = max(orDefault(cfg.ConnWindow, defaultClientConnWindow), initialWindow) // a connection's window starts there
	cfg.MaxHeaderBytes = orDefault(cfg.MaxHeaderBytes, defaultClientMaxHeader)
	if cfg.ExpectContinueWait <= 0 {
		cfg.ExpectContinueWait = time.Second
	}
	cc := &ClientConn{
		cfg: cfg, conn: c, streams: map[uint32]*clientStream{}, nextID: 1,
		maxStreams: initialMaxStreams, peerWindow: initialWindow,
		recv: inflow{avail: int64(cfg.ConnWindow)},
	}
	cc.o.init(c, &cc.mu, cfg.WriteTimeout)
	cc.fr = http2.NewFramer(nil, bufio.NewReaderSize(c, readBuffer))
	cc.fr.SetMaxReadFrameSize(maxReadFrame)
	cc.fr.MaxHeaderListSize = cfg.MaxHeaderBytes
	cc.hr = newHeaderReader(cc.fr)
	cc.mu.Lock()
	cc.o.out = append(cc.o.out, clientPreface...)
	cc.o.settings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(cfg.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: cfg.MaxHeaderBytes},
	)
	if cfg.ConnWindow > initialWindow {
		cc.o.windowUpdate(0, uint32(cfg.ConnWindow-initialWindow))
	}
	cc.o.flush()
	err := cc.o.err
	cc.mu.Unlock()
	if err != nil {
		c.Close()
		return nil, err
	}
	cc.lastRead.Store(time.Now().UnixNano())
	if cfg.PingAfter > 0 && cfg.PingTimeout > 0 {
		cc.health = time.AfterFunc(cfg.PingAfter, cc.checkHealth)
	}
	go cc.readLoop()
	return cc, nil
}

// Reserve promises a stream to a request about to be sent with RoundTrip;
// ErrConnUnusable if the connection is going away, broken, or at its
// server's stream limit.
func (cc *ClientConn) Reserve() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !cc.canOpenLocked() {
		return ErrConnUnusable
	}
	cc.reserved++
	return nil
}

// idleStreamLocked reports a stream this side has not opened (RFC 9113
// §5.1; a server opens none: push is off). Called with mu held.
func (cc *ClientConn) idleStreamLocked(id uint32) bool { return id%2 == 0 || id >= cc.nextID }

func (cc *ClientConn) canOpenLocked() bool {
	return cc.err == nil && cc.o.err == nil && !cc.goAway && uint32(len(cc.streams)+cc.reserved) < cc.streamLimit() &&
		uint64(cc.nextID)+2*uint64(cc.reserved) <= 1<<31-1 // (stream IDs end at 2^31-1: the reserved take theirs first)
}

// streamLimit is how many streams the connection may carry at once: the
// server's limit, or the configured one below it. Called with mu held.
func (cc *ClientConn) streamLimit() uint32 {
	if m := cc.cfg.MaxStreams; m > 0 && m < cc.maxStreams {
		return m
	}
	return cc.maxStreams
}

// Err is why the connection ended, nil while it is open (a connection
// going away still carries the requests it has: Reserve says whether it
// takes new ones).
func (cc *ClientConn) Err() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err
}

// LocalAddr and RemoteAddr are the connection's addresses.
func (cc *ClientConn) LocalAddr() net.Addr  { return cc.conn.LocalAddr() }
func (cc *ClientConn) RemoteAddr() net.Addr { return cc.conn.RemoteAddr() }

// InFlight is how many requests the connection carries.
func (cc *ClientConn) InFlight() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.streams) + cc.reserved
}

// Close ends the connection and every request on it.
func (cc *ClientConn) Close() error {
	cc.fail(errClosed)
	return nil
}

// fail ends the connection with err: every request in flight fails with
// it (ErrConnLost for a connection that broke).
func (cc *ClientConn) fail(err error) {
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.err = err
	if cc.o.err == nil {
		cc.o.err = err
	}
	cc.o.drained.Broadcast()
	streams := make([]*clientStream, 0, len(cc.streams))
	for _, cs := range cc.streams {
		streams = append(streams, cs)
		cs.flow.wake.Signal()
	}
	clear(cc.streams)
	cc.idle.stop()
	if cc.health != nil {
		cc.health.Stop()
	}
	cc.mu.Unlock()
	cc.conn.Close()
	for _, cs := range streams {
		cs.end(err)
	}
}

// goAwayAndClose tells the server why the connection ends, then ends it.
func (cc *ClientConn) goAwayAndClose(code http2.ErrCode, reason string) {
	cc.mu.Lock()
	if cc.err == nil && cc.o.err == nil {
		cc.o.goAway(0, code, reason)
		cc.o.settle()
	}
	cc.mu.Unlock()
	cc.fail(fmt.Errorf("%w: %v: %s", ErrConnLost, code, reason))
}

// checkHealth pings a server silent for PingAfter while requests wait,
// and gives up on it after PingTimeout more.
func (cc *ClientConn) checkHealth() {
	silent := time.Since(time.Unix(0, cc.lastRead.Load()))
	cc.mu.Lock()
	busy, alive := len(cc.streams) > 0, cc.err == nil
	if busy && alive && silent >= cc.cfg.PingAfter && !cc.pinged.Load() {
		cc.pinged.Store(true)
		cc.conn.SetReadDeadline(time.Now().Add(cc.cfg.PingTimeout))
		cc.o.header(8, http2.FramePing, 0, 0)
		cc.o.out = append(cc.o.out, "trellis!"...)
		cc.o.flush()
	}
	if alive {
		cc.health.Reset(cc.cfg.PingAfter)
	}
	cc.mu.Unlock()
}

func (cc *ClientConn) readLoop() {
	for {
		f, err := cc.hr.readFrame()
		if err == nil {
			cc.lastRead.Store(time.Now().UnixNano())
			if cc.pinged.Load() {
				cc.mu.Lock() // (checkHealth sets the flag and the deadline together under it)
				if cc.pinged.CompareAndSwap(true, false) {
					cc.conn.SetReadDeadline(time.Time{})
				}
				cc.mu.Unlock()
			}
			err = cc.process(f)
		}
		var se http2.StreamError
		if errors.As(err, &se) {
			cc.resetStream(se.StreamID, se.Code, se)
			continue
		}
		if err != nil {
			cc.readFailed(err)
			return
		}
	}
}

// readFailed ends the connection after err, telling the server about a
// protocol error.
func (cc *ClientConn) readFailed(err error) {
	var ce connErr
	var fce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		cc.goAwayAndClose(ce.code, ce.reason)
	case errors.As(err, &fce):
		cc.goAwayAndClose(http2.ErrCode(fce), err.Error())
	case errors.Is(err, http2.ErrFrameTooLarge):
		cc.goAwayAndClose(http2.ErrCodeFrameSize, "frame too large")
	case errors.Is(err, io.EOF):
		cc.fail(ErrConnLost)
	default:
		cc.fail(fmt.Errorf("%w: %w", ErrConnLost, err))
	}
}

func (cc *ClientConn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return cc.processHeaders(f)
	case *http2.DataFrame:
		return cc.processData(f)
	case *http2.SettingsFrame:
		return cc.processSettings(f)
	case *http2.WindowUpdateFrame:
		return cc.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		cc.mu.Lock()
		cs := cc.streams[f.StreamID]
		if cs != nil {
			delete(cc.streams, cs.id)
			cc.becameIdleLocked()
		}
		idle := cc.idleStreamLocked(f.StreamID)
		cc.mu.Unlock()
		if idle {
			return connError(http2.ErrCodeProtocol, "RST_STREAM on an idle stream")
		}
		if cs != nil {
			err := error(http2.StreamError{StreamID: f.StreamID, Code: f.ErrCode})
			if f.ErrCode == http2.ErrCodeRefusedStream {
				err = fmt.Errorf("%w: %w", ErrRefused, err)
			}
			cs.end(err)
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			cc.mu.Lock()
			cc.o.pingAck(f.Data)
			err := cc.o.controlFrames(17)
			cc.mu.Unlock()
			return err
		}
	case *http2.GoAwayFrame:
		cc.processGoAway(f)
	case *http2.PushPromiseFrame:
		return connError(http2.ErrCodeProtocol, "PUSH_PROMISE although disabled")
	}
	return nil
}

func (cc *ClientConn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.o.settingsFrom(f, &cc.peerWindow, func(yield func(*sendFlow) bool) {
		for _, cs := range cc.streams {
			if !yield(&cs.flow) {
				return
			}
		}
	}, func(s http2.Setting) {
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			cc.maxStreams = s.Val
		case http2.SettingMaxHeaderListSize:
			cc.peerMaxList = s.Val
		}
	})
}

func (cc *ClientConn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if err := cc.o.connGrew(inc); err != nil {
			return err
		}
	} else if cs := cc.streams[f.StreamID]; cs != nil {
		if cs.flow.window += inc; cs.flow.window > maxWindow {
			return streamError(f.StreamID, http2.ErrCodeFlowControl)
		}
		cs.flow.grew()
	} else if cc.idleStreamLocked(f.StreamID) {
		return connError(http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream")
	}
	return nil
}

// processGoAway stops new requests; those above the last stream the
// server processes fail as not processed, the others finish.
func (cc *ClientConn) processGoAway(f *http2.GoAwayFrame) {
	cc.mu.Lock()
	cc.goAway = true
	var refused []*clientStream
	for id, cs := range cc.streams {
		if id > f.LastStreamID {
			refused = append(refused, cs)
			delete(cc.streams, id)
		}
	}
	done := len(cc.streams) == 0
	cc.mu.Unlock()
	for _, cs := range refused {
		cs.end(fmt.Errorf("%w: GOAWAY %v, last stream %d", ErrRefused, f.ErrCode, f.LastStreamID))
	}
	if done {
		cc.fail(ErrConnUnusable)
	}
}

// resetStream answers a stream error: the request fails with err.
func (cc *ClientConn) resetStream(id uint32, code http2.ErrCode, err error) {
	cc.mu.Lock()
	cs := cc.streams[id]
	if cs != nil {
		delete(cc.streams, id)
		cc.becameIdleLocked()
	}
	cc.o.rstStream(id, code)
	flood := cc.o.controlFrames(13)
	cc.mu.Unlock()
	if cs != nil {
		cs.end(err)
	}
	if flood != nil {
		cc.readFailed(flood)
	}
}

// becameIdleLocked starts the idle timer, or closes a connection that is
// going away, once the last request is done. Called with mu held.
func (cc *ClientConn) becameIdleLocked() {
	if len(cc.streams) > 0 || cc.reserved > 0 || cc.err != nil {
		return
	}
	if cc.goAway {
		go cc.fail(ErrConnUnusable)
		return
	}
	if cc.cfg.IdleTimeout <= 0 {
		return
	}
	cc.idle.start(cc.cfg.IdleTimeout, cc.idleOut)
}

// idleOut closes a connection without requests; it takes no new ones
// from the moment it is found idle.
func (cc *ClientConn) idleOut() {
	cc.mu.Lock()
	if cc.err != nil || cc.goAway {
		cc.mu.Unlock()
		return
	}
	if cc.idle.again(len(cc.streams) > 0 || cc.reserved > 0, cc.cfg.IdleTimeout) {
		cc.mu.Unlock()
		return
	}
	cc.goAway = true
	cc.mu.Unlock()
	cc.goAwayAndClose(http2.ErrCodeNo, "idle")
}

// refund gives n consumed bytes of window back to the server: from the
// reading goroutine (reader) without writing itself.
func (cc *ClientConn) refund(cs *clientStream, n int64, reader bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err != nil || n == 0 {
		return
	}
	if inc := cc.recv.give(n, cc.cfg.ConnWindow); inc > 0 {
		cc.o.windowUpdate(0, inc)
	}
	if cs != nil && cc.streams[cs.id] == cs && !cs.remoteDone {
		if inc := cs.recv.give(n, cc.cfg.StreamWindow); inc > 0 {
			cc.o.windowUpdate(cs.id, inc)
		}
	}
	if reader {
		cc.o.kick()
	} else {
		cc.o.flush()
	}
}

// statusOf is a response's status from its ":status", 0 if malformed.
func statusOf(v string) int {
	if len(v) != 3 {
		return 0
	}
	n := 0
	for _, c := range []byte(v) {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	if n < 100 {
		return 0
	}
	return n
}

var _ http.RoundTripper = (*ClientConn)(nil)
