package transport

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Socket is an accepted or dialled TCP connection whose reads and writes are
// raw system calls made through its syscall.RawConn. The socket is
// non-blocking, so no call blocks: one that would is a wait on the runtime's
// poller, as with net.Conn's own, and deadlines and Close work as they do
// there.
//
// What it saves is the runtime's bookkeeping around a blocking call, and
// with it a thread wake-up per request: net.Conn's reads and writes take the
// runtime's blocking-call path, which wakes the runtime's monitor thread
// whenever the process comes out of idle, and a proxy at a moderate rate is
// idle between requests — each request woke a second thread, which then
// polled every 20 µs while the request was served. docs/benchmarks.md,
// "Wake-ups between requests".
type Socket struct {
	*net.TCPConn
	rc   syscall.RawConn
	r, w rawCall
}

// rawCall is the state of one direction's call, which the RawConn's
// callback fills in; mu serialises callers, as the poller does reads (and
// writes) of one descriptor.
type rawCall struct {
	mu  sync.Mutex
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// maxRW caps one system call's length, as the net package does.
const maxRW = 1 << 30

// NewSocket returns c as a Socket if it is a TCP connection, else c itself.
func NewSocket(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	s := &Socket{TCPConn: tc, rc: rc}
	s.r.fn = s.readFD
	s.w.fn = s.writeFD
	return s
}

// Unwrap returns the TCP connection, for what needs it itself (splice,
// linger, the idle pool's peek); the original destination is read through
// the promoted SyscallConn.
func (s *Socket) Unwrap() net.Conn { return s.TCPConn }

// File is not supported: the descriptor it would duplicate shares the
// socket's non-blocking flag, which os.File.Fd clears, and a raw call on a
// blocking socket would block the whole runtime.
func (s *Socket) File() (*os.File, error) {
	return nil, &net.OpError{Op: "file", Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: errors.ErrUnsupported}
}

// Read reads as net.Conn's Read does, with the same errors.
func (s *Socket) Read(p []byte) (int, error) {
	if len(p) == 0 { // as net.Conn: fails only if closed
		return 0, s.opError("read", s.rc.Control(func(uintptr) {}))
	}
	return s.do(&s.r, "read", p[:min(len(p), maxRW)], s.rc.Read)
}

// Write writes all of p as net.Conn's Write does, with the same errors.
func (s *Socket) Write(p []byte) (int, error) {
	if len(p) == 0 { // as net.Conn: fails if closed or past the deadline
		return 0, s.opError("write", s.rc.Write(func(uintptr) bool { return true }))
	}
	return s.do(&s.w, "write", p, s.rc.Write)
}

func (s *Socket) do(c *rawCall, op string, p []byte, call func(func(uintptr) bool) error) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.p, c.n, c.err = p, 0, nil
	err := call(c.fn)
	n := c.n
	if err == nil {
		err = c.err
	}
	c.p, c.err = nil, nil
	return n, s.opError(op, err)
}

// opError wraps err as net.Conn's methods do: io.EOF as it is, anything
// else in a *net.OpError naming op.
func (s *Socket) opError(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var oe *net.OpError
	if errors.As(err, &oe) { // the RawConn's own: Op "raw-read", "raw-write", "raw-control"
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: err}
}

// readFD makes one read; false asks the poller to wait until readable.
func (s *Socket) readFD(fd uintptr) bool {
	for {
		n, errno := sysRead(fd, s.r.p)
		switch errno {
		case 0:
			s.r.n = n
			if n == 0 {
				s.r.err = io.EOF
			}
			return true
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			s.r.err = os.NewSyscallError("read", errno)
			return true
		}
	}
}

// writeFD writes what is left until done, failed, or it would block (false:
// the poller waits until writable and calls again).
func (s *Socket) writeFD(fd uintptr) bool {
	for len(s.w.p) > 0 {
		chunk := s.w.p[:min(len(s.w.p), maxRW)]
		n, errno := sysWrite(fd, chunk)
		switch errno {
		case 0:
			if n == 0 {
				s.w.err = io.ErrUnexpectedEOF
				return true
			}
			s.w.n += n
			s.w.p = s.w.p[n:]
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			s.w.err = os.NewSyscallError("write", errno)
			return true
		}
	}
	return true
}
