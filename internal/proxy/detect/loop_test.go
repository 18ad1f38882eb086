package detect

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// Before the detection loop was bounded, a silent client whose target could
// not be dialed made Detect read into an empty buffer forever at full CPU.
func TestDetectUnreachableTargetDoesNotSpin(t *testing.T) {
	_, proxySide := pair(t)
	d := Detector{Timeout: 200 * time.Millisecond, ServerFirstDelay: 20 * time.Millisecond, MaxWait: time.Minute}
	refused := func(context.Context) (net.Conn, error) { return nil, errors.New("connection refused") }
	res, err := detectWithin(t, 5*time.Second, func() (Result, error) {
		return d.Detect(context.Background(), proxySide, refused)
	})
	if err != nil || !res.TimedOut || res.Protocol != Opaque {
		t.Fatalf("got %+v, %v; want an opaque timeout after the detect timeout", res, err)
	}
}

// A silent client is not waited for once the proxy stops: the drain ends
// detection, and the early connection to the target is closed.
func TestDetectStopsWhenContextEnds(t *testing.T) {
	_, proxySide := pair(t)
	var up upstream
	dial := up.dial(t)
	d := Detector{Timeout: time.Minute, ServerFirstDelay: 20 * time.Millisecond, MaxWait: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		s := <-up.server
		time.Sleep(50 * time.Millisecond)
		cancel()
		// The probe's connection is let go.
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("early upstream read %d, %v after the stop; want EOF", n, err)
		}
	}()
	_, err := detectWithin(t, 5*time.Second, func() (Result, error) { return d.Detect(ctx, proxySide, dial) })
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("got %v; want ErrStopped", err)
	}
	<-checked
}

// A silent client does not hold a connection to the target past the detect
// timeout, though it is still waited for (and classified) until MaxWait.
func TestDetectReleasesTheProbeOfASilentClient(t *testing.T) {
	app, proxySide := pair(t)
	var up upstream
	dial := up.dial(t)
	d := Detector{Timeout: 100 * time.Millisecond, ServerFirstDelay: 20 * time.Millisecond, MaxWait: 10 * time.Second}
	released := make(chan time.Duration, 1)
	go func() {
		s := <-up.server
		start := time.Now()
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		s.Read(make([]byte, 1))
		released <- time.Since(start)
		app.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	}()
	res, err := detectWithin(t, 8*time.Second, func() (Result, error) { return d.Detect(context.Background(), proxySide, dial) })
	if err != nil || res.Protocol != HTTP1 || res.Upstream != nil {
		t.Fatalf("got %+v, %v; want HTTP1 without an early upstream", res, err)
	}
	if took := <-released; took > 2*time.Second {
		t.Fatalf("the early upstream was held %v for a silent client", took)
	}
}

func detectWithin(t *testing.T, limit time.Duration, detect func() (Result, error)) (Result, error) {
	t.Helper()
	type outcome struct {
		res Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := detect()
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-time.After(limit):
		t.Fatalf("Detect did not return within %v", limit)
		return Result{}, nil
	}
}

// scriptConn is a connection whose reads follow a script: each step returns
// some of data, nothing (an empty read, which io.Reader allows), EOF, or
// blocks like a silent peer until its deadline. After the script it is
// silent. It records reads into empty buffers.
type scriptConn struct {
	net.Conn // unused methods

	mu        sync.Mutex
	steps     []byte
	data      []byte
	delivered []byte
	deadline  time.Time
	closed    bool
	changed   chan struct{}
	emptyBufs int
}

func newScriptConn(steps, data []byte) *scriptConn {
	return &scriptConn{steps: steps, data: data, changed: make(chan struct{})}
}

func (c *scriptConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(p) == 0 {
		c.emptyBufs++
	}
	var step byte = 3
	if len(c.steps) > 0 {
		step, c.steps = c.steps[0], c.steps[1:]
	}
	switch step % 4 {
	case 0:
		if len(c.data) > 0 {
			n := copy(p, c.data[:min(int(step>>2)+1, len(c.data))])
			c.delivered = append(c.delivered, c.data[:n]...)
			c.data = c.data[n:]
			c.mu.Unlock()
			return n, nil
		}
	case 1:
		c.mu.Unlock()
		return 0, nil
	case 2:
		c.mu.Unlock()
		return 0, io.EOF
	}
	// Silent until the deadline, a new deadline, or Close.
	for {
		if c.closed {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		wait := time.Hour
		if !c.deadline.IsZero() {
			if wait = time.Until(c.deadline); wait <= 0 {
				c.mu.Unlock()
				return 0, os.ErrDeadlineExceeded
			}
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-time.After(wait):
		}
		c.mu.Lock()
	}
}

func (c *scriptConn) poke() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *scriptConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	c.poke()
	return nil
}

func (c *scriptConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.poke()
	return nil
}

// FuzzDetectLoop drives the whole detection loop — not only the classifier
// — with clients and early upstreams that send in arbitrary pieces, read
// empty, hang up or stay silent, with or without a target to probe, and a
// stop at an arbitrary moment. Detection must always end within its
// deadlines, never read into an empty buffer, and replay every byte read.
func FuzzDetectLoop(f *testing.F) {
	f.Add([]byte{0, 0, 0}, []byte("GET / HTTP/1.1\r\n\r\n"), []byte{3}, byte(2), byte(0))
	f.Add([]byte{3, 3}, []byte(""), []byte{3}, byte(0), byte(0))     // silent client, unreachable target
	f.Add([]byte{3, 1, 1}, []byte("x"), []byte{0}, byte(2), byte(5)) // server first
	f.Add([]byte{1, 1, 1, 1, 2}, []byte("PRI * HTTP/2.0\r\n"), []byte{}, byte(1), byte(3))
	f.Fuzz(func(t *testing.T, clientSteps, clientData, serverSteps []byte, dialMode, stopAfter byte) {
		if len(clientSteps) > 512 || len(clientData) > 2*MaxPeek {
			return
		}
		client := newScriptConn(clientSteps, clientData)
		var server *scriptConn // set once dialed
		var dial DialFunc
		switch dialMode % 3 {
		case 1:
			dial = func(context.Context) (net.Conn, error) { return nil, errors.New("unreachable") }
		case 2:
			dial = func(context.Context) (net.Conn, error) {
				server = newScriptConn(serverSteps, []byte("220 hello\r\n"))
				return server, nil
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if stopAfter > 0 {
			time.AfterFunc(time.Duration(stopAfter)*time.Millisecond, cancel)
		}
		d := Detector{Timeout: 20 * time.Millisecond, ServerFirstDelay: 2 * time.Millisecond, MaxWait: 40 * time.Millisecond, OpaqueUnlessTLS: dialMode%5 == 4}
		res, err := detectWithin(t, 5*time.Second, func() (Result, error) { return d.Detect(ctx, client, dial) })

		client.mu.Lock()
		defer client.mu.Unlock()
		if client.emptyBufs > 0 {
			t.Fatalf("%d reads into an empty buffer", client.emptyBufs)
		}
		if err == nil {
			if prefix, _ := res.Client.Unwrap(); !bytes.Equal(prefix, client.delivered) {
				t.Fatalf("replays %q of the %q read", prefix, client.delivered)
			}
			if res.ServerFirst && res.Upstream == nil {
				t.Fatal("server-first without the early upstream")
			}
		}
		if server != nil {
			server.mu.Lock()
			defer server.mu.Unlock()
			if server.emptyBufs > 0 {
				t.Fatal("read into an empty buffer upstream")
			}
			if (err != nil || res.Upstream == nil) && !server.closed {
				t.Fatal("the early upstream was neither handed over nor closed")
			}
		}
	})
}
