// Package testkit holds the small pieces many tests need: a test binary
// that doubles as the command under test, free loopback addresses, a TCP
// echo server, a goroutine-safe buffer, readiness polling and the
// repository's pinned test tools.
package testkit

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RunMainIf runs main instead of the tests when env is set to "1": call it
// first in TestMain, and Command re-executes the test binary as the real
// command, with its flags, environment and signals.
func RunMainIf(env string, main func()) {
	if os.Getenv(env) == "1" {
		main()
		os.Exit(0)
	}
}

// Command returns the test binary re-executed as the command under test
// (see RunMainIf), with args.
func Command(t testing.TB, env string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env+"=1", "GORACE=atexit_sleep_ms=0")
	return cmd
}

// FreeAddr returns a loopback address with a port nobody listens on now,
// for something the test starts to bind. The port is between 11000 and
// 20000: below Linux's ephemeral range (32768 and up), from which the
// kernel picks the source port of every connection the machine opens (one
// from there could be taken by another test's connection before the
// caller binds it; seen under load: "bind: address already in use");
// below the 20000-30000 that `trellis demo` picks its applications' ports
// from (a demo another test runs could take it); below Kubernetes'
// NodePorts (30000 and up); above the test cluster's own ports (10250 and
// around). A port is handed out once per process.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 1000 {
		p := 11000 + rand.IntN(9000)
		if _, taken := handedOut.LoadOrStore(p, true); taken {
			continue
		}
		addr := "127.0.0.1:" + strconv.Itoa(p)
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return ""
}

// handedOut is the ports FreeAddr returned in this process.
var handedOut sync.Map

// Serve accepts TCP connections on a loopback port until the test ends and
// handles each with h in its own goroutine, closing it afterwards.
func Serve(t testing.TB, h func(net.Conn)) string {
	t.Helper()
	return ServeOn(t, "127.0.0.1:0", h)
}

// ServeOn is Serve on addr.
func ServeOn(t testing.TB, addr string, h func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				h(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// EchoServer echoes every byte back and half-closes when the client does.
func EchoServer(t testing.TB) string {
	t.Helper()
	return Serve(t, func(c net.Conn) {
		io.Copy(c, c)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	})
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers (a process's
// output, a logger) and readers.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WaitReady polls url until it answers 200, for at most 15 s.
func WaitReady(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(10 * time.Millisecond) // a poll interval, not a synchronisation
	}
	t.Fatalf("%s did not answer 200 within 15s", url)
}

// Get sends GET url with the Host header host (if not "") and header, reads
// the body to its end and returns the status.
func Get(t testing.TB, url, host string, header map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// HostLockFile serialises the test packages that change the host's own
// network (bridges, host iptables, sysctls): they check the host is as
// they left it, so two must never run at once.
const HostLockFile = "/run/trellis-host-tests.lock"

// LockHost takes the host lock, waiting for another package's tests to
// finish with the host; the returned function releases it.
func LockHost() (unlock func(), err error) {
	f, err := os.OpenFile(HostLockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// OpenFDs is the number of file descriptors this process holds.
func OpenFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}

// WaitFor polls cond every 5 ms until it holds, failing t after 10 s with
// what it waited for.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// WaitOpenFDs waits until this process holds at most n file descriptors,
// failing t after within.
func WaitOpenFDs(t testing.TB, n int, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); OpenFDs(t) > n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d file descriptors open after %v; want at most %d", OpenFDs(t), within, n)
		}
	}
}

// RepoRoot walks up from the working directory to the module root.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/trellis-mesh/trellis\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of github.com/trellis-mesh/trellis above the working directory")
		}
		dir = parent
	}
}

// Tool is the path of a third-party test tool: the one .ci/run installs
// pinned into .tools/bin, else one on PATH. pkg is its `go install`
// argument, for the message when neither exists.
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	if root, err := RepoRoot(); err == nil {
		if path, err := exec.LookPath(filepath.Join(root, ".tools", "bin", name)); err == nil {
			return path
		}
	}
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run .ci/run, or GOBIN=$PWD/.tools/bin go install %s", name, pkg)
	}
	return path
}
