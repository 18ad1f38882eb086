package h2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// output is the write side of a connection: frames are appended to out
// under mu, and the goroutine that finds no write under way writes all of
// out, again and again until it stays empty, releasing mu during each
// write. A goroutine that appends while another writes returns at once:
// its frames leave with the writer's next write.
type output struct {
	conn    net.Conn
	mu      *sync.Mutex // the connection's
	drained sync.Cond   // a write ended, or the connection failed
	out     []byte
	spare   []byte
	writing bool
	control int   // bytes of control frames queued since the last write began
	err     error // the first write error, or errClosed: nothing more is written

	// timeout bounds each write (of at most writeChunk): a peer that takes
	// nothing for that long (stopped reading) fails the connection.
	// deadline is the write deadline set last; final is set once settle
	// gave the last writes theirs.
	timeout  time.Duration
	deadline time.Time
	final    bool

	enc    *hpack.Encoder
	encBuf bytes.Buffer

	// window is what the peer lets the connection send. inLine are the
	// streams waiting for it, in the order they began to wait: a
	// connection WINDOW_UPDATE wakes the first, which wakes the next if it
	// leaves window over (one wake per update, not one per waiting stream).
	window    int64
	inLine    []*sendFlow
	connGrown uint64        // how many times the peer grew the connection's window
	stall     time.Duration // a stream given no window for that long is reset

	maxFrame int // the peer's SETTINGS_MAX_FRAME_SIZE
}

// maxBuffered is how much output a handler may leave queued before it
// waits for the connection to take it.
const maxBuffered = 1 << 20

// closeWait bounds the last write (a GOAWAY) of a connection that ends.
const closeWait = time.Second

// defaultWriteTimeout is how long a write may wait on a peer that does not
// read before the connection is given up, unless configured (nginx's
// send_timeout is the same).
const defaultWriteTimeout = 60 * time.Second

// writeChunk is the most one write system call is given: each chunk of a
// large write gets the timeout anew, so a peer reading slowly but steadily
// (at least writeChunk per half timeout) is not given up.
const writeChunk = 256 << 10

// stallFactor: a stream to which the peer grows no flow-control window
// (neither its own nor the connection's) for stallFactor times the write
// timeout — five minutes by default, Envoy's stream idle timeout — is
// reset. A peer that reads slowly keeps growing it; one that never does
// would hold the stream, its handler and its upstream request for good.
const stallFactor = 5

var errClosed = errors.New("http2: connection closed")

func (o *output) init(c net.Conn, mu *sync.Mutex, timeout time.Duration) {
	o.conn, o.mu = c, mu
	o.timeout = timeout
	if o.timeout <= 0 {
		o.timeout = defaultWriteTimeout
	}
	o.stall = stallFactor * o.timeout
	o.drained.L = mu
	o.enc = hpack.NewEncoder(&o.encBuf)
	o.maxFrame = 16 << 10
	o.window = initialWindow
}

// flush writes out until it is empty, unless another goroutine is at it.
// Called with mu held; returns with mu held.
//
// Before writing it lets the goroutines ready to run go first: those that
// queue frames on this connection meanwhile find a write under way and
// leave theirs to this one, so one system call carries what several
// streams sent (with GOMAXPROCS=1 each would otherwise find the write
// done and make its own). With nothing else ready to run, it writes at once.
func (o *output) flush() {
	if o.writing {
		return
	}
	o.writing = true
	o.mu.Unlock()
	runtime.Gosched()
	o.mu.Lock()
	o.writeAll()
}

// kick has what is queued written without the caller becoming the
// writer: a connection's reading goroutine must not block in a write (two
// proxies each writing to the other with both TCP paths full would stop
// reading for good), so the writing is left to the goroutine under way or
// to a new one. Called with mu held.
func (o *output) kick() {
	if o.writing || len(o.out) == 0 {
		return
	}
	o.writing = true
	go func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.writeAll()
	}()
}

// writeAll is the writer's loop; writing is set. Called with mu held. A
// write that fails closes the connection: its reading goroutine ends it.
func (o *output) writeAll() {
	failed := false
	for len(o.out) > 0 && o.err == nil {
		b := o.out
		o.out, o.spare = o.spare[:0], nil
		o.control = 0
		o.arm()
		o.mu.Unlock()
		err := o.write(b)
		o.mu.Lock()
		if err != nil && o.err == nil {
			o.err, failed = err, true
		}
		if cap(b) <= 4*maxBuffered {
			o.spare = b[:0]
		}
		o.drained.Broadcast()
	}
	o.writing = false
	o.drained.Broadcast() // settle waits for this
	if failed {
		o.mu.Unlock()
		o.conn.Close()
		o.mu.Lock()
	}
}

// write writes b in chunks of at most writeChunk, each given the timeout
// anew. Called by the writer, without mu.
func (o *output) write(b []byte) error {
	for len(b) > writeChunk {
		if _, err := o.conn.Write(b[:writeChunk]); err != nil {
			return err
		}
		b = b[writeChunk:]
		o.mu.Lock()
		o.arm()
		o.mu.Unlock()
	}
	_, err := o.conn.Write(b)
	return err
}

// arm gives the write about to start at least half the timeout: the
// deadline moves only when less than that is left, not on every write.
// Called with mu held, by the writer.
func (o *output) arm() {
	if o.final {
		return
	}
	if now := time.Now(); o.deadline.Sub(now) < o.timeout/2 {
		o.deadline = now.Add(o.timeout)
		o.conn.SetWriteDeadline(o.deadline)
	}
}

// settle writes what is queued, or waits for the writer under way to, for
// up to closeWait: a connection about to close keeps what it queued last
// (a response, a GOAWAY). Called with mu held.
func (o *output) settle() {
	if o.err != nil {
		return
	}
	o.final = true
	o.conn.SetWriteDeadline(time.Now().Add(closeWait))
	o.flush()
	for o.writing && o.err == nil {
		o.drained.Wait()
	}
}

// wait blocks a producer while too much output is queued, as long as ok
// says it may still send. Called with mu held.
func (o *output) wait(ok func() error) error {
	for len(o.out) >= maxBuffered && o.err == nil && ok() == nil {
		o.drained.Wait()
	}
	if o.err != nil {
		return o.err
	}
	return ok()
}

// room waits, before a producer queues more, while the backlog is full.
// Called with mu held.
func (o *output) room(ok func() error) error {
	if len(o.out) >= maxBuffered {
		o.flush()
	}
	return o.wait(ok)
}

// controlFrames has the n bytes of control frames the reading goroutine
// just queued written, or fails the connection when the peer makes it owe
// too many (acknowledgements, resets, window updates it does not read: a
// flood). Called with mu held.
func (o *output) controlFrames(n int) error {
	if o.control += n; o.control > maxControlBacklog {
		return connError(http2.ErrCodeEnhanceYourCalm, "the peer does not read its control frames")
	}
	o.kick()
	return nil
}

// settingsFrom applies a peer's SETTINGS to what this side sends — the
// initial stream window (its change applies to every stream's window, so
// streams gives each one's), the largest frame, the HPACK table — hands
// every other setting to other, and acknowledges the frame. Called with mu
// held, from the reading goroutine. A frame may repeat a setting (the last
// value counts): the streams' windows move once per frame, by the last
// initial window's change, however many times the frame names it.
func (o *output) settingsFrom(f *http2.SettingsFrame, initial *int32, streams func(yield func(*sendFlow) bool), other func(http2.Setting)) error {
	newInitial := int64(-1)
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			newInitial = int64(s.Val)
		case http2.SettingMaxFrameSize:
			o.maxFrame = int(s.Val)
		case http2.SettingHeaderTableSize:
			o.enc.SetMaxDynamicTableSizeLimit(s.Val)
		default:
			other(s)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if newInitial >= 0 {
		delta := newInitial - int64(*initial)
		*initial = int32(newInitial)
		for f := range streams {
			if f.window += delta; f.window > maxWindow {
				return connError(http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window")
			}
			if delta > 0 {
				f.grew()
			}
		}
	}
	o.settingsAck()
	return o.controlFrames(9)
}

// maxControlBacklog bounds the control frames queued since the last write
// began.
const maxControlBacklog = 256 << 10

func (o *output) header(length int, typ http2.FrameType, flags http2.Flags, stream uint32) {
	o.out = append(o.out, byte(length>>16), byte(length>>8), byte(length), byte(typ), byte(flags))
	o.out = binary.BigEndian.AppendUint32(o.out, stream)
}

func (o *output) settings(s ...http2.Setting) {
	o.header(6*len(s), http2.FrameSettings, 0, 0)
	for _, v := range s {
		o.out = binary.BigEndian.AppendUint16(o.out, uint16(v.ID))
		o.out = binary.BigEndian.AppendUint32(o.out, v.Val)
	}
}

func (o *output) settingsAck() { o.header(0, http2.FrameSettings, http2.FlagSettingsAck, 0) }

func (o *output) pingAck(data [8]byte) {
	o.header(8, http2.FramePing, http2.FlagPingAck, 0)
	o.out = append(o.out, data[:]...)
}

func (o *output) windowUpdate(stream uint32, n uint32) {
	o.header(4, http2.FrameWindowUpdate, 0, stream)
	o.out = binary.BigEndian.AppendUint32(o.out, n)
}

func (o *output) rstStream(stream uint32, code http2.ErrCode) {
	o.header(4, http2.FrameRSTStream, 0, stream)
	o.out = binary.BigEndian.AppendUint32(o.out, uint32(code))
}

// maxGoAwayDebug bounds a GOAWAY's debug data, which may quote the peer.
const maxGoAwayDebug = 256

func (o *output) goAway(last uint32, code http2.ErrCode, debug string) {
	debug = debug[:min(len(debug), maxGoAwayDebug)]
	o.header(8+len(debug), http2.FrameGoAway, 0, 0)
	o.out = binary.BigEndian.AppendUint32(o.out, last)
	o.out = binary.BigEndian.AppendUint32(o.out, uint32(code))
	o.out = append(o.out, debug...)
}

func (o *output) data(stream uint32, p []byte, end bool) {
	var flags http2.Flags
	if end {
		flags = http2.FlagDataEndStream
	}
	o.header(len(p), http2.FrameData, flags, stream)
	o.out = append(o.out, p...)
}

// fields is a header block being encoded.
type fields struct{ o *output }

func (o *output) startFields() fields {
	o.encBuf.Reset()
	return fields{o}
}

func (f fields) add(name, value string) {
	f.o.enc.WriteField(hpack.HeaderField{Name: name, Value: value})
}

// end frames the encoded block as HEADERS and CONTINUATION frames.
func (f fields) end(stream uint32, endStream bool) {
	o := f.o
	block := o.encBuf.Bytes()
	typ, flags := http2.FrameHeaders, http2.Flags(0)
	if endStream {
		flags = http2.FlagHeadersEndStream
	}
	for first := true; first || len(block) > 0; first = false {
		chunk := block[:min(len(block), o.maxFrame)]
		block = block[len(chunk):]
		if len(block) == 0 {
			flags |= http2.FlagHeadersEndHeaders
		}
		o.header(len(chunk), typ, flags, stream)
		o.out = append(o.out, chunk...)
		typ, flags = http2.FrameContinuation, 0
	}
}

// lowerName is an HTTP/1 style field name as HTTP/2 writes it; common
// names are looked up, not lowered, per field.
func lowerName(k string) string {
	if v, ok := commonLower[k]; ok {
		return v
	}
	return strings.ToLower(k)
}

var commonLower = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Accept-Ranges", "Age", "Allow",
		"Authorization", "Cache-Control", "Content-Disposition", "Content-Encoding",
		"Content-Language", "Content-Length", "Content-Location", "Content-Range",
		"Content-Type", "Cookie", "Date", "Etag", "Expires", "Grpc-Encoding",
		"Grpc-Accept-Encoding", "Grpc-Message", "Grpc-Status", "Grpc-Status-Details-Bin",
		"Grpc-Timeout", "Last-Modified", "Link", "Location", "Range", "Referer",
		"Retry-After", "Server", "Set-Cookie", "Strict-Transport-Security", "Trailer",
		"User-Agent", "Vary", "Via", "Www-Authenticate", "X-Forwarded-For",
		"X-Request-Id", "Traceparent", "Tracestate",
	} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

// sendFlow is a stream's send window and its place in line for the
// connection's. Guarded by the connection's mu.
type sendFlow struct {
	window int64     // what the peer lets the stream send
	wake   sync.Cond // its window grew, it is first in line, or it is gone (L: the connection's mu)
	grown  uint64    // how many times the peer grew window
	queued bool      // in the connection's line
	popped bool      // woken as first in line: back to the front if it cannot send
}

// grew counts window the peer gave the stream and wakes the stream if it
// may send. Called with mu held.
func (f *sendFlow) grew() {
	f.grown++
	if f.window > 0 {
		f.wake.Signal()
	}
}

// connGrew adds the window the peer gave the connection (a WINDOW_UPDATE
// of stream 0) and wakes the first stream in line for it; a window beyond
// 2^31-1 is a connection error (RFC 9113 §6.9.1). Called with mu held.
func (o *output) connGrew(inc int64) error {
	if o.window += inc; o.window > maxWindow {
		return connError(http2.ErrCodeFlowControl, "connection window above 2^31-1")
	}
	o.connGrown++
	o.nextInLine()
	return nil
}

// sendData appends p as DATA frames of stream id within the stream's and
// the connection's send windows (both decremented), the last one ending
// the stream if end. Where a window is spent, or the output backlog is
// full, it writes what is queued and waits; ok says whether the stream may
// still send (checked after every wait). Called with mu held.
func (o *output) sendData(id uint32, p []byte, end bool, f *sendFlow, ok func() error) error {
	defer o.nextInLine()
	for first := true; first || len(p) > 0; first = false {
		n := max(0, min(int64(len(p)), int64(o.maxFrame), f.window, o.window)) // a window may be negative (RFC 9113 §6.9.2)
		if n <= 0 && len(p) > 0 {
			if err := o.awaitWindow(f, ok); err != nil {
				return err
			}
			continue
		}
		o.data(id, p[:n], end && int(n) == len(p))
		f.window -= n
		o.window -= n
		p = p[n:]
		if len(p) > 0 {
			if err := o.room(ok); err != nil {
				return err
			}
		}
	}
	return nil
}

// errStalled is a stream the peer gave no flow-control window, on it or
// on the connection, for the stall timeout.
var errStalled = errors.New("http2: the peer gave no flow-control window for the stall timeout")

// awaitWindow writes what is queued and waits until both of f's windows
// let it send, it may not send any more (ok), or the peer has grown
// neither window for the stall timeout. Called with mu held.
func (o *output) awaitWindow(f *sendFlow, ok func() error) error {
	o.flush() // releases mu while it writes: check again after
	stalled := false
	seen := f.grown + o.connGrown
	var t *time.Timer
	t = time.AfterFunc(o.stall, func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		if grown := f.grown + o.connGrown; grown != seen {
			seen = grown // window came meanwhile: the stall counts from now
			t.Reset(o.stall)
			return
		}
		stalled = true
		f.wake.Signal()
	})
	defer t.Stop()
	for {
		err := ok()
		switch {
		case err == nil && f.window > 0 && o.window > 0:
			o.leaveLine(f)
			return nil
		case err == nil && stalled:
			err = errStalled
		case err == nil && f.window <= 0:
			o.leaveLine(f)
			o.nextInLine() // what it cannot take now goes to the next
			f.wake.Wait()
			continue
		case err == nil:
			o.joinLine(f)
			f.wake.Wait()
			continue
		}
		o.leaveLine(f)
		return err
	}
}

// joinLine puts f in line for the connection's window: at the back, or
// back at the front if it was woken as first and found the window taken.
// Called with mu held.
func (o *output) joinLine(f *sendFlow) {
	if f.queued {
		return
	}
	f.queued = true
	if f.popped {
		f.popped = false
		o.inLine = slices.Insert(o.inLine, 0, f)
		return
	}
	o.inLine = append(o.inLine, f)
}

// nextInLine wakes the first stream waiting for the connection's window,
// if there is window for it. Called with mu held.
func (o *output) nextInLine() {
	if o.window <= 0 || len(o.inLine) == 0 {
		return
	}
	f := o.inLine[0]
	o.inLine[0] = nil
	o.inLine = o.inLine[1:]
	f.queued, f.popped = false, true
	f.wake.Signal()
}

// leaveLine takes f out of the connection's line. Called with mu held.
func (o *output) leaveLine(f *sendFlow) {
	f.popped = false
	if !f.queued {
		return
	}
	f.queued = false
	if i := slices.Index(o.inLine, f); i >= 0 {
		o.inLine = slices.Delete(o.inLine, i, i+1)
	}
}

// inflow is what the peer may still send on a stream or a connection, and
// what was received and consumed but not yet given back.
type inflow struct {
	avail  int64
	unsent int64
}

// take accounts for n bytes received; false if they exceed the window.
func (f *inflow) take(n int64) bool {
	if f.avail < n {
		return false
	}
	f.avail -= n
	return true
}

// give records n bytes consumed and returns the window increment to
// announce: all that is pending once it reaches a quarter of window (fewer
// WINDOW_UPDATE frames), else 0.
func (f *inflow) give(n int64, window int32) uint32 {
	f.unsent += n
	if f.unsent < int64(window)/4 {
		return 0
	}
	inc := f.unsent
	f.avail += inc
	f.unsent = 0
	return uint32(inc)
}
