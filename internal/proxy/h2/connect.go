package h2

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Stream is a CONNECT tunnel's stream (RFC 9113 §8.5): a connection's
// bytes both ways. Its writes are the caller's own, without a goroutine in
// between, so a Write or CloseWrite that returned has handed its bytes to
// the connection. Read and Write may run at once; Close from any
// goroutine.
type Stream struct{ cs *clientStream }

// Connect opens a CONNECT tunnel to authority on a stream the caller
// reserved, and returns it once the server answered 2xx; ctx bounds only
// the wait: the stream lives until it is closed.
func (cc *ClientConn) Connect(ctx context.Context, authority string) (*Stream, error) {
	if ctx.Err() != nil { // a stream opened only to be reset would count as a rapid reset
		cc.unreserve()
		return nil, context.Cause(ctx)
	}
	req := &http.Request{Method: http.MethodConnect, Host: authority, URL: &url.URL{Host: authority},
		Header: http.Header{}, Body: http.NoBody}
	cs, err := cc.start(req, true, nil)
	if err != nil {
		return nil, err
	}
	s := &Stream{cs}
	select {
	case <-cs.respc:
	case <-ctx.Done():
		s.Close()
		return nil, context.Cause(ctx)
	}
	if cs.err != nil {
		return nil, cs.err
	}
	if cs.resp.StatusCode/100 != 2 {
		s.Close()
		return nil, &ConnectError{Authority: authority, Status: cs.resp.Status}
	}
	cc.mu.Lock()
	if cs.body == nil { // the server ended its side in its answer: reads see the end
		cs.body = newBody(cs, &cs.resp.Trailer, false)
		cs.body.finish(io.EOF, nil)
	}
	cc.mu.Unlock()
	return s, nil
}

// ConnectError is a CONNECT the server answered with a status other than
// 2xx.
type ConnectError struct{ Authority, Status string }

func (e *ConnectError) Error() string {
	return fmt.Sprintf("http2: CONNECT %s refused: %s", e.Authority, e.Status)
}

// Read reads what the server sends; io.EOF once it ended its side.
func (s *Stream) Read(p []byte) (int, error) { return s.cs.body.Read(p) }

// Write sends p, waiting for flow control as needed.
func (s *Stream) Write(p []byte) (int, error) {
	if err := s.cs.send(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseWrite ends this side (END_STREAM), as TCP's FIN.
func (s *Stream) CloseWrite() error { return s.cs.send(nil, true) }

// Close ends the stream: one not ended both ways is reset (RST_STREAM
// CANCEL), as TCP's RST; a read or write under way fails.
func (s *Stream) Close() error {
	cs := s.cs
	cs.cancel(errStreamClosed)
	cs.cc.mu.Lock()
	b := cs.body // (nil before the response's head)
	cs.cc.mu.Unlock()
	if b != nil {
		b.Close() // what was received and not read goes back to the window
	}
	return nil
}

// SetReadDeadline bounds reads, as net.Conn's does.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.cs.body.SetReadDeadline(t) }
