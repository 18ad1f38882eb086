package h2

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Server serves HTTP/2 connections whose client speaks first with the
// connection preface (prior knowledge, h2c, or HTTP/2 inside TLS the
// caller terminated).
type Server struct {
	Handler http.Handler
	// MaxConcurrentStreams is how many requests a client may have in
	// flight on one connection (default 1000).
	MaxConcurrentStreams uint32
	// MaxHeaderBytes bounds a request's header list (SETTINGS_MAX_HEADER_LIST_SIZE,
	// default http.DefaultMaxHeaderBytes); larger requests get 431.
	MaxHeaderBytes int
	// StreamWindow and ConnWindow are how much request body a client may
	// send ahead on one stream and on the connection (defaults 1 MiB and
	// 4 MiB): a connection's window well above a stream's keeps one slowly
	// read upload on a shared connection from stalling the others.
	StreamWindow int32
	ConnWindow   int32
	// IdleTimeout closes a connection without requests for that long
	// (GOAWAY first); 0 means never.
	IdleTimeout time.Duration
	// WriteTimeout closes a connection whose client takes nothing written
	// to it for that long (it stopped reading); default 60 s.
	WriteTimeout time.Duration
	// Log takes handler panics and protocol errors (at debug level).
	Log *slog.Logger
	// ResetFlood, if set, is called for each connection closed as a
	// rapid-reset flood.
	ResetFlood func(remote net.Addr)

	workers workers // the goroutines running stream handlers
}

const (
	defaultMaxStreams   = 1000
	defaultStreamWindow = 1 << 20
	defaultConnWindow   = 4<<20 - 1
	initialWindow       = 65535 // RFC 9113 §6.9.2
	maxWindow           = 1<<31 - 1
	// maxReadFrame is the SETTINGS_MAX_FRAME_SIZE announced: the protocol's
	// initial 16 KiB, as nginx, Envoy and linkerd2-proxy announce.
	maxReadFrame = 16 << 10
	readBuffer   = 16 << 10
	// minHeaderBudget is the least the header lists of one connection's
	// requests in flight may take together (see serverConn.headerBytes):
	// a thousand requests of 4 KiB of fields.
	minHeaderBudget = 4 << 20
)

// ServeConn serves c until the client closes it, it idles out, or drain
// ends: then the client gets GOAWAY, the requests under way finish, and
// the connection closes. Every request's context derives from ctx.
func (s *Server) ServeConn(ctx context.Context, c net.Conn, drain context.Context) {
	sc := newServerConn(s, ctx, c)
	defer sc.handlers.Wait()
	defer sc.cancel()
	stop := context.AfterFunc(drain, sc.startDrain)
	defer stop()
	sc.serve()
}

// serverConn is one connection.
type serverConn struct {
	srv     *Server
	conn    net.Conn
	in      *bufio.Reader // conn's input: frames read with one system call for many
	fr      *http2.Framer
	hr      *headerReader // reads fr, header blocks whole
	ctx     context.Context
	cancel  context.CancelFunc
	remote  string
	log     *slog.Logger
	handler http.Handler

	maxStreams   uint32
	streamWindow int32
	connWindow   int32

	mu         sync.Mutex
	o          output
	streams    map[uint32]*stream
	maxID      uint32 // the highest stream the client opened
	recv       inflow // what the client may send on the connection
	peerWindow int32  // the client's SETTINGS_INITIAL_WINDOW_SIZE
	running    int    // handlers running
	// headerBytes is what the header lists of the running handlers'
	// requests take; a stream that would take it beyond maxHeaderBytes is
	// refused (HPACK lets a client send a 64 KiB list in a few bytes: a
	// thousand streams would hold 64 MiB).
	headerBytes, maxHeaderBytes int
	handlers                    sync.WaitGroup
	goAway                      bool // GOAWAY sent: no new streams
	lingering                   bool // closing gracefully: the client's last frames are read
	closed                      bool
	idle                        idleTimer // armed at the start if IdleTimeout is set

	flood resetCount // read loop only
	// resetIDs are the last streams reset or ignored by this side, whose
	// frames still in flight are ignored (RFC 9113 §5.1). Guarded by mu.
	resetIDs [256]uint32
	resetAt  int
}

// rememberReset notes a stream reset or ignored by this side. Called with
// mu held.
func (sc *serverConn) rememberReset(id uint32) {
	if sc.wasReset(id) {
		return
	}
	sc.resetIDs[sc.resetAt%len(sc.resetIDs)] = id
	sc.resetAt++
}

// wasReset reports a stream this side recently reset or ignored. Called
// with mu held.
func (sc *serverConn) wasReset(id uint32) bool {
	for _, r := range sc.resetIDs {
		if r == id {
			return true
		}
	}
	return false
}

func newServerConn(s *Server, ctx context.Context, c net.Conn) *serverConn {
	sc := &serverConn{
		srv: s, conn: c, remote: c.RemoteAddr().String(), handler: s.Handler,
		log:          s.Log,
		maxStreams:   orDefault(s.MaxConcurrentStreams, defaultMaxStreams),
		streamWindow: orDefault(s.StreamWindow, defaultStreamWindow),
		connWindow:   max(orDefault(s.ConnWindow, defaultConnWindow), initialWindow), // a connection's window starts there
		streams:      map[uint32]*stream{},
		peerWindow:   initialWindow,
	}
	if sc.log == nil {
		sc.log = slog.New(slog.DiscardHandler)
	}
	sc.recv.avail = int64(sc.connWindow)
	sc.ctx, sc.cancel = context.WithCancel(ctx)
	sc.o.init(c, &sc.mu, s.WriteTimeout)
	sc.in = bufio.NewReaderSize(c, readBuffer)
	sc.fr = http2.NewFramer(nil, sc.in)
	sc.fr.SetMaxReadFrameSize(maxReadFrame)
	maxHeader := s.MaxHeaderBytes
	if maxHeader <= 0 {
		maxHeader = http.DefaultMaxHeaderBytes
	}
	sc.fr.MaxHeaderListSize = uint32(maxHeader)
	sc.maxHeaderBytes = max(minHeaderBudget, 16*maxHeader)
	sc.hr = newHeaderReader(sc.fr)
	return sc
}

func orDefault[T int32 | uint32](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

var clientPreface = []byte(http2.ClientPreface)

func (sc *serverConn) serve() {
	sc.mu.Lock()
	sc.o.settings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: sc.maxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(sc.streamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: sc.fr.MaxHeaderListSize},
	)
	if sc.connWindow > initialWindow {
		sc.o.windowUpdate(0, uint32(sc.connWindow-initialWindow))
	}
	sc.o.flush()
	if sc.srv.IdleTimeout > 0 {
		sc.idle.start(sc.srv.IdleTimeout, sc.idleOut)
	}
	sc.mu.Unlock()

	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(sc.in, preface[:]); err != nil || !bytes.Equal(preface[:], clientPreface) {
		sc.close()
		return
	}
	first := true
	for {
		f, err := sc.hr.readFrame()
		if err == nil && first {
			if _, ok := f.(*http2.SettingsFrame); !ok {
				err = connError(http2.ErrCodeProtocol, "the first frame is not SETTINGS")
			}
			first = false
		}
		if err == nil {
			err = sc.process(f)
		}
		var se http2.StreamError
		if errors.As(err, &se) {
			err = sc.resetStream(se.StreamID, se.Code)
		}
		if err == nil {
			continue
		}
		sc.fail(err)
		return
	}
}

// connErr is a connection error with what to tell the client.
type connErr struct {
	code   http2.ErrCode
	reason string
}

func (e connErr) Error() string {
	return fmt.Sprintf("http2: connection error: %v: %s", e.code, e.reason)
}

func connError(code http2.ErrCode, reason string) error { return connErr{code, reason} }

func streamError(id uint32, code http2.ErrCode) error {
	return http2.StreamError{StreamID: id, Code: code}
}

// fail ends the connection after err: a protocol error is told to the
// client with GOAWAY.
func (sc *serverConn) fail(err error) {
	var ce connErr
	var fce http2.ConnectionError
	code, reason := http2.ErrCode(0), ""
	switch {
	case errors.As(err, &ce):
		code, reason = ce.code, ce.reason
	case errors.As(err, &fce):
		code, reason = http2.ErrCode(fce), err.Error()
		if d := sc.fr.ErrorDetail(); d != nil {
			reason = d.Error()
		}
	case errors.Is(err, http2.ErrFrameTooLarge):
		code, reason = http2.ErrCodeFrameSize, "frame too large"
	default:
		sc.close() // the client hung up, or the connection broke
		return
	}
	sc.log.Debug("HTTP/2 connection error", "client", sc.remote, "code", code, "reason", reason)
	sc.goAwayAndClose(code, reason, true)
}

// goAwayAndClose sends GOAWAY with code and closes the connection. The
// reading goroutine (reader) first reads what the client still sends, for
// up to closeWait: closing with unread input would reset the connection,
// and the reset can overtake the GOAWAY.
func (sc *serverConn) goAwayAndClose(code http2.ErrCode, reason string, reader bool) {
	sc.mu.Lock()
	sent := false
	if !sc.closed && sc.o.err == nil {
		sc.goAway = true
		sc.o.goAway(sc.maxID, code, reason)
		sc.o.settle()
		sent = sc.o.err == nil
	}
	sc.mu.Unlock()
	if sent && reader {
		if cw, ok := sc.conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		sc.conn.SetReadDeadline(time.Now().Add(closeWait))
		io.Copy(io.Discard, io.LimitReader(sc.in, 1<<20))
	}
	sc.close()
}

// close ends the connection: requests under way are cancelled, their
// bodies broken off, and their writes fail.
func (sc *serverConn) close() {
	sc.mu.Lock()
	if sc.closed {
		sc.mu.Unlock()
		return
	}
	sc.closed = true
	sc.o.settle()
	if sc.o.err == nil {
		sc.o.err = errClosed
	}
	sc.o.drained.Broadcast()
	sc.idle.stop()
	streams := make([]*stream, 0, len(sc.streams))
	for _, st := range sc.streams {
		streams = append(streams, st)
		st.flow.wake.Signal()
	}
	sc.mu.Unlock()
	sc.cancel()
	for _, st := range streams {
		st.body.finish(errClientGone, nil)
	}
	sc.conn.Close()
}

var errClientGone = errors.New("http2: client connection closed")

// startDrain sends GOAWAY: requests under way finish, new ones are
// refused, and the connection closes once none is left.
func (sc *serverConn) startDrain() {
	sc.mu.Lock()
	if sc.goAway || sc.closed {
		sc.mu.Unlock()
		return
	}
	sc.goAway = true
	sc.o.goAway(sc.maxID, http2.ErrCodeNo, "")
	sc.o.flush()
	done := sc.running == 0
	sc.mu.Unlock()
	if done {
		sc.closeGracefully()
	}
}

// idleOut closes a connection without requests. The check and the GOAWAY
// are one step under the lock: a request arriving after them is beyond
// the GOAWAY's last stream, which its client knows to send again.
func (sc *serverConn) idleOut() {
	sc.mu.Lock()
	if sc.closed || sc.goAway {
		sc.mu.Unlock()
		return
	}
	if sc.idle.again(sc.running > 0, sc.srv.IdleTimeout) {
		sc.mu.Unlock()
		return
	}
	if sc.o.err == nil {
		sc.goAway = true
		sc.o.goAway(sc.maxID, http2.ErrCodeNo, "idle")
	}
	sc.mu.Unlock()
	sc.closeGracefully()
}

// closeGracefully ends a connection that sent GOAWAY and has no request
// left: what is queued (the last responses, the GOAWAY) is written, the
// write side shut, and the reading goroutine reads what the client still
// sends, for up to closeWait, before the connection closes (its read then
// fails). Closing with unread input would reset the connection, and the
// reset can overtake the responses and the GOAWAY: a client that sent a
// request before it saw the GOAWAY would not learn that it may send it
// again.
func (sc *serverConn) closeGracefully() {
	sc.mu.Lock()
	if sc.closed || sc.lingering {
		sc.mu.Unlock()
		return
	}
	sc.lingering = true
	sc.o.settle()
	if sc.o.err == nil {
		sc.o.err = errClosed // what the client's last frames would have answered is not written
	}
	sc.mu.Unlock()
	if cw, ok := sc.conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	sc.conn.SetReadDeadline(time.Now().Add(closeWait))
}

// process acts on one frame the client sent.
func (sc *serverConn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return sc.processHeaders(f)
	case *http2.DataFrame:
		return sc.processData(f)
	case *http2.SettingsFrame:
		return sc.processSettings(f)
	case *http2.WindowUpdateFrame:
		return sc.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return sc.processReset(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			sc.mu.Lock()
			sc.o.pingAck(f.Data)
			err := sc.o.controlFrames(17)
			sc.mu.Unlock()
			return err
		}
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return streamError(f.StreamID, http2.ErrCodeProtocol) // RFC 9113 §5.3.1
		}
	case *http2.PushPromiseFrame:
		return connError(http2.ErrCodeProtocol, "a client sent PUSH_PROMISE")
	case *http2.GoAwayFrame:
		// The client opens no more streams; those under way finish.
	}
	return nil
}

func (sc *serverConn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.o.settingsFrom(f, &sc.peerWindow, func(yield func(*sendFlow) bool) {
		for _, st := range sc.streams {
			if !yield(&st.flow) {
				return
			}
		}
	}, func(http2.Setting) {})
}

func (sc *serverConn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		return sc.o.connGrew(inc)
	}
	st := sc.streams[f.StreamID]
	if st == nil {
		if sc.idleStream(f.StreamID) {
			return connError(http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream")
		}
		return nil // a closed stream
	}
	if st.flow.window += inc; st.flow.window > maxWindow {
		return streamError(f.StreamID, http2.ErrCodeFlowControl)
	}
	st.flow.grew()
	return nil
}

// idleStream reports a stream the client has not opened yet (RFC 9113
// §5.1). Called with mu held.
func (sc *serverConn) idleStream(id uint32) bool { return id%2 == 0 || id > sc.maxID }

func (sc *serverConn) processReset(f *http2.RSTStreamFrame) error {
	sc.mu.Lock()
	st := sc.streams[f.StreamID]
	if st == nil {
		idle := sc.idleStream(f.StreamID)
		sc.mu.Unlock()
		if idle {
			return connError(http2.ErrCodeProtocol, "RST_STREAM on an idle stream")
		}
		return nil
	}
	premature := st.premature()
	sc.removeLocked(st)
	sc.mu.Unlock()
	st.cancel(errStreamReset)
	st.body.finish(errStreamReset, nil)
	return sc.countReset(premature)
}

// countReset counts a stream ended by a reset, the client's or one its
// frames made this side send (a window overflow, DATA beyond a window or a
// Content-Length: "MadeYouReset", CVE-2025-8671, costs the proxy as much
// as a reset the client sends), and fails the connection once most recent
// streams ended so prematurely (see flood.go). Read loop only.
func (sc *serverConn) countReset(premature bool) error {
	if !sc.flood.reset(premature) {
		return nil
	}
	sc.log.Warn("HTTP/2 connection closed with GOAWAY ENHANCE_YOUR_CALM: most streams were reset before their response (rapid reset)",
		"client", sc.remote)
	if sc.srv.ResetFlood != nil {
		sc.srv.ResetFlood(sc.conn.RemoteAddr())
	}
	return connError(http2.ErrCodeEnhanceYourCalm, "rapid reset")
}

var errStreamReset = errors.New("http2: the client reset the stream")

// resetStream answers a stream error: the stream, if open, is reset (and
// counted as one the client had reset). An error ends the connection.
// Read loop only.
func (sc *serverConn) resetStream(id uint32, code http2.ErrCode) error {
	sc.mu.Lock()
	st := sc.streams[id]
	premature := false
	if st != nil {
		premature = st.premature()
		sc.removeLocked(st)
	}
	if id > sc.maxID && id%2 == 1 {
		sc.maxID = id // a stream refused as it opened is closed
	}
	sc.o.rstStream(id, code)
	sc.rememberReset(id)
	err := sc.o.controlFrames(13)
	sc.mu.Unlock()
	if st != nil {
		st.cancel(errStreamReset)
		st.body.finish(errStreamReset, nil)
	}
	if err != nil {
		return err
	}
	return sc.countReset(premature)
}

// removeLocked forgets a stream that is closed, or reset, and gives back
// what its unread body took of the connection's window. Called with mu
// held.
func (sc *serverConn) removeLocked(st *stream) {
	if sc.streams[st.id] != st {
		return
	}
	delete(sc.streams, st.id)
	st.reset = true
	sc.o.drained.Broadcast() // its writer, waiting for room, gives up
	st.flow.wake.Signal()    // or waiting for window
}

// refund gives n bytes of window back to the client once they were
// consumed, on the connection and, while the client may still send on it,
// on the stream. Updates are sent in batches of a quarter window.
func (sc *serverConn) refund(st *stream, n int64) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.refundLocked(st, n)
	sc.o.flush()
}

func (sc *serverConn) refundLocked(st *stream, n int64) {
	if sc.closed || n == 0 {
		return
	}
	if inc := sc.recv.give(n, sc.connWindow); inc > 0 {
		sc.o.windowUpdate(0, inc)
	}
	if st == nil || st.remoteDone || st.reset {
		return
	}
	if inc := st.recv.give(n, sc.streamWindow); inc > 0 {
		sc.o.windowUpdate(st.id, inc)
	}
}

func (sc *serverConn) processData(f *http2.DataFrame) error {
	id, n := f.StreamID, int64(f.Length)
	sc.mu.Lock()
	if !sc.recv.take(n) {
		sc.mu.Unlock()
		return connError(http2.ErrCodeFlowControl, "DATA beyond the connection's window")
	}
	st := sc.streams[id]
	if st == nil && sc.wasReset(id) {
		sc.refundLocked(nil, n) // in flight when this side reset it: ignored (RFC 9113 §5.1)
		sc.o.kick()
		sc.mu.Unlock()
		return nil
	}
	if st == nil || st.remoteDone {
		idle := st == nil && sc.idleStream(id)
		sc.refundLocked(nil, n)
		sc.mu.Unlock()
		if idle {
			return connError(http2.ErrCodeProtocol, "DATA on an idle stream")
		}
		return streamError(id, http2.ErrCodeStreamClosed)
	}
	if !st.recv.take(n) {
		sc.refundLocked(nil, n)
		sc.mu.Unlock()
		return streamError(id, http2.ErrCodeFlowControl)
	}
	data := f.Data()
	st.received += int64(len(data))
	end := f.StreamEnded()
	if st.declared >= 0 && (st.received > st.declared || end && st.received != st.declared) {
		sc.refundLocked(nil, n)
		sc.mu.Unlock()
		return streamError(id, http2.ErrCodeProtocol) // RFC 9113 §8.1.1
	}
	if pad := n - int64(len(data)); pad > 0 {
		sc.refundLocked(st, pad)
		sc.o.kick()
	}
	if end {
		st.remoteDone = true
		if st.localDone {
			sc.removeLocked(st)
		}
	}
	sc.mu.Unlock()
	if len(data) > 0 {
		if dropped := st.body.write(data); dropped > 0 {
			sc.mu.Lock()
			sc.refundLocked(st, dropped)
			sc.o.kick()
			sc.mu.Unlock()
		}
	}
	if end {
		st.body.finish(io.EOF, nil)
	}
	return nil
}
