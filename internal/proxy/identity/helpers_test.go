package identity

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	ctrl "github.com/trellis-mesh/trellis/internal/control/identity"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

var (
	web = meshid.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
	api = meshid.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "api"}
)

// control is a real identity service on loopback that a test can stop and
// start again on the same address with the same hierarchy.
type control struct {
	t    testing.TB
	opts ctrl.Options
	srv  *ctrl.Server
	stop func()
}

func startControl(t testing.TB, leafLifetime time.Duration) *control {
	t.Helper()
	c := &control{t: t, opts: ctrl.Options{
		Addr:                "127.0.0.1:0",
		AdminAddr:           "127.0.0.1:0",
		TrustDomain:         meshid.DefaultTrustDomain,
		DataDir:             t.TempDir(),
		LeafLifetime:        leafLifetime,
		ExpiryWarning:       ctrl.DefaultExpiryWarning,
		RateLimit:           1000,
		RateBurst:           1000,
		ShutdownGracePeriod: time.Second,
	}}
	c.start()
	c.opts.Addr = c.srv.Addr().String() // restarts reuse the address
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *control) start() {
	c.t.Helper()
	srv, err := ctrl.NewServer(c.opts, slog.New(slog.DiscardHandler))
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	c.srv = srv
	c.stop = func() { cancel(); <-done }
}

func (c *control) token(id meshid.ID) TokenSource { return c.tokenOf(id, false) }

// tokenOf is a join token for id, single-use if once.
func (c *control) tokenOf(id meshid.ID, once bool) TokenSource {
	c.t.Helper()
	tok, err := ctrl.IssueJoinToken(c.srv.JoinTokenKey(), id, time.Hour, once, time.Now())
	if err != nil {
		c.t.Fatal(err)
	}
	return StaticToken([]byte(tok))
}

// fakeClock hands every wait the manager starts to the test, which fires it.
type fakeClock struct {
	waits chan wait
}

type wait struct {
	d    time.Duration
	fire chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{waits: make(chan wait, 100)} }

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	w := wait{d, make(chan time.Time, 1)}
	f.waits <- w
	return w.fire
}

// next returns the manager's next wait.
func (f *fakeClock) next(t *testing.T) wait {
	t.Helper()
	select {
	case w := <-f.waits:
		return w
	case <-time.After(10 * time.Second):
		t.Fatal("the manager started no wait within 10s")
		return wait{}
	}
}

// startManager runs a manager for id against c and returns it.
func startManager(t *testing.T, c *control, id meshid.ID, edit func(*Config)) *Manager {
	t.Helper()
	cfg := Config{
		ID:           id,
		TrustAnchors: c.srv.CA().AnchorPool(),
		Token:        c.token(id),
		Addr:         c.opts.Addr,
		BackoffMin:   20 * time.Millisecond,
		BackoffMax:   200 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return m
}

func waitReady(t *testing.T, m *Manager) {
	t.Helper()
	select {
	case <-m.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("no certificate within 10s")
	}
}

// echoServer accepts TLS connections with cfg and echoes each line back,
// reporting every handshake's state.
func echoServer(t *testing.T, cfg *tls.Config) (addr string, states <-chan tls.ConnectionState) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan tls.ConnectionState, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					return
				}
				ch <- tc.ConnectionState()
				io.Copy(tc, tc)
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// dialTLS connects with cfg, returning the connection or the handshake error.
func dialTLS(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	// TLS 1.3 client certificates are checked after the client's handshake
	// completes; a round trip surfaces the server's verdict.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		c.Close()
		return nil, err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func echo(t *testing.T, c *tls.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write on established connection: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo on established connection: %q, %v", buf, err)
	}
}

// tlsPipe returns the two ends of a loopback TCP connection wrapped as a TLS
// server and client, not yet handshaken.
func tlsPipe(t testing.TB, server, client *tls.Config) (*tls.Conn, *tls.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	t.Cleanup(func() { cc.Close(); sc.Close() })
	deadline := time.Now().Add(5 * time.Second)
	cc.SetDeadline(deadline)
	sc.SetDeadline(deadline)
	return tls.Server(sc, server), tls.Client(cc, client)
}
