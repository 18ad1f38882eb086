package mesh

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// testCreds are one workload certificate, for both ends, under a test CA.
type testCreds struct {
	anchors *x509.CertPool
	cert    *tls.Certificate
}

var peerID = meshid.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "api"}

func newTestCreds(t *testing.T) *testCreds {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, leafKey := key(), key()
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test anchor"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	uri, _ := url.Parse(peerID.String())
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), URIs: []*url.URL{uri},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	anchors := x509.NewCertPool()
	anchors.AddCert(ca)
	return &testCreds{anchors: anchors, cert: &tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}
}

func (c *testCreds) ServerConfig() *tls.Config {
	return identity.ServerConfig(c.anchors, func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cert, nil })
}

func (c *testCreds) ClientConfig(peer meshid.ID) *tls.Config {
	return identity.ClientConfig(c.anchors, peer, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c.cert, nil })
}

// peerProxy is the inbound side of a peer proxy: it terminates mesh TLS,
// offering protos, reads the header, and serves a tunnel's streams or an
// opaque session's bytes with app. It counts the TCP connections it
// accepted and remembers the headers it read.
type peerProxy struct {
	addr    string
	port    uint16
	conns   atomic.Int64
	mu      sync.Mutex
	headers []Header
}

func startPeer(t *testing.T, creds *testCreds, protos []string, allowed func(uint16) bool, app func(port uint16, c net.Conn)) *peerProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); ln.Close() })
	p := &peerProxy{addr: ln.Addr().String()}
	_, ps, _ := net.SplitHostPort(p.addr)
	n, _ := strconv.Atoi(ps)
	p.port = uint16(n)
	cfg := creds.ServerConfig()
	cfg.NextProtos = protos
	srv := TunnelServer(allowed, func(_ context.Context, port uint16, c net.Conn) { app(port, c) }, 0, nil, nil)
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			go func() {
				tc := tls.Server(raw, cfg)
				defer tc.Close()
				h, err := ReadHeader(tc)
				if err != nil {
					return
				}
				p.mu.Lock()
				p.headers = append(p.headers, h)
				p.mu.Unlock()
				if h.Protocol == Tunnel {
					srv.ServeConn(ctx, tc, ctx)
					return
				}
				app(h.Port, tc)
			}()
		}
	}()
	return p
}

func newDialer(creds *testCreds, peer *peerProxy) *Dialer {
	return &Dialer{TCP: &transport.Dialer{Timeout: 5 * time.Second, Registry: metrics.NewRegistry()}, Creds: creds, Port: peer.port}
}

// echo copies what the client sends back to it, then half-closes.
func echo(_ uint16, c net.Conn) {
	io.Copy(c, c)
	transport.CloseWrite(c)
	io.Copy(io.Discard, c)
}

func anyPort(uint16) bool { return true }

// roundTrip sends msg on a new opaque session to port 5432, half-closes,
// and returns what came back (read while sending: an echo of more than
// the windows hold would otherwise wait on the reader).
func roundTrip(d *Dialer, msg string) (string, error) {
	c, err := d.Dial(context.Background(), transport.Outbound, "127.0.0.1:5432", peerID, Opaque)
	if err != nil {
		return "", err
	}
	defer c.Close()
	sent := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, msg)
		if err == nil {
			err = transport.CloseWrite(c)
		}
		sent <- err
	}()
	got, err := io.ReadAll(c)
	if err == nil {
		err = <-sent
	}
	return string(got), err
}

// Opaque connections to a peer that takes tunnels are streams of one mesh
// connection, each reaching the application port it names, however many
// are open at once.
func TestOpaqueConnectionsShareOneTunnel(t *testing.T) {
	creds := newTestCreds(t)
	var ports sync.Map
	peer := startPeer(t, creds, []string{ALPNTunnels, ALPN}, anyPort, func(port uint16, c net.Conn) {
		ports.Store(port, true)
		echo(port, c)
	})
	d := newDialer(creds, peer)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			msg := strings.Repeat("payload "+strconv.Itoa(i)+" ", 1000) // beyond a frame
			if i == 0 {
				msg = strings.Repeat("bulk", 1<<20) // many windows' worth
			}
			if got, err := roundTrip(d, msg); err != nil || got != msg {
				t.Errorf("connection %d echoed %d bytes, %v; want %d", i, len(got), err, len(msg))
			}
		})
	}
	wg.Wait()
	if n := peer.conns.Load(); n != 1 {
		t.Errorf("20 opaque connections took %d mesh connections; want 1", n)
	}
	if _, ok := ports.Load(uint16(5432)); !ok {
		t.Error("the streams did not reach the port they named")
	}
	if h := peer.headers; len(h) != 1 || h[0].Protocol != Tunnel {
		t.Errorf("headers %v; want one tunnel", h)
	}
}

// Each direction ends on its own: the application may finish sending
// before the client does and still receive everything the client sends
// after that.
func TestTunnelStreamHalfClosesEachWay(t *testing.T) {
	creds := newTestCreds(t)
	got := make(chan string, 1)
	peer := startPeer(t, creds, []string{ALPNTunnels, ALPN}, anyPort, func(_ uint16, c net.Conn) {
		io.WriteString(c, "greeting")
		transport.CloseWrite(c)
		b, err := io.ReadAll(c)
		if err != nil {
			b = append(b, " and then "+err.Error()...)
		}
		got <- string(b)
	})
	d := newDialer(creds, peer)
	c, err := d.Dial(context.Background(), transport.Outbound, "127.0.0.1:5432", peerID, Opaque)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "greeting" {
		t.Fatalf("read %q, %v; want the greeting, then the end", b, err)
	}
	io.WriteString(c, "sent after the server's end")
	transport.CloseWrite(c)
	select {
	case s := <-got:
		if s != "sent after the server's end" {
			t.Errorf("the application read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the application never saw the client's end")
	}
}

// Closing one end before both directions ended resets the stream: the
// other end's read fails rather than ending cleanly, as with TCP's RST.
func TestTunnelStreamCloseResetsThePeer(t *testing.T) {
	creds := newTestCreds(t)
	appErr := make(chan error, 1)
	peer := startPeer(t, creds, []string{ALPNTunnels, ALPN}, anyPort, func(port uint16, c net.Conn) {
		if port == 1 { // the application aborts
			io.WriteString(c, "partial")
			c.Close()
			return
		}
		_, err := io.ReadAll(c) // the client aborts
		appErr <- err
	})
	d := newDialer(creds, peer)

	c, err := d.Dial(context.Background(), transport.Outbound, "127.0.0.1:1", peerID, Opaque)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	c.Close()
	if err == nil {
		t.Errorf("a stream the application aborted after %q ended cleanly", b)
	}

	c, err = d.Dial(context.Background(), transport.Outbound, "127.0.0.1:2", peerID, Opaque)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "partial")
	c.Close()
	select {
	case err := <-appErr:
		if err == nil {
			t.Error("a stream the client aborted ended cleanly at the application")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the application never saw the client's abort")
	}
}

// A stream for a port the peer does not serve is refused when it opens.
func TestTunnelStreamToARefusedPortFailsToOpen(t *testing.T) {
	creds := newTestCreds(t)
	peer := startPeer(t, creds, []string{ALPNTunnels, ALPN}, func(p uint16) bool { return p == 5432 }, echo)
	d := newDialer(creds, peer)
	_, err := d.Dial(context.Background(), transport.Outbound, "127.0.0.1:9901", peerID, Opaque)
	if !errors.Is(err, ErrPeerRefused) || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a stream to a refused port: %v; want it refused by the peer (403)", err)
	}
	if got, err := roundTrip(d, "still usable"); err != nil || got != "still usable" {
		t.Errorf("the tunnel after a refused stream echoed %q, %v", got, err)
	}
}

// A read deadline wakes a read waiting on a quiet peer, as protocol
// detection's server-first probe needs of its early connection.
func TestTunnelStreamReadDeadline(t *testing.T) {
	creds := newTestCreds(t)
	peer := startPeer(t, creds, []string{ALPNTunnels, ALPN}, anyPort, echo)
	d := newDialer(creds, peer)
	c, err := d.Dial(context.Background(), transport.Outbound, "127.0.0.1:5432", peerID, Opaque)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v; want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	io.WriteString(c, "after")
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "after" {
		t.Fatalf("read after clearing the deadline: %q, %v", b, err)
	}
}

// A peer that knows only the first protocol (an older proxy) gets a mesh
// connection per opaque session with the session's header, as before
// tunnels; the dialer stops asking it for tunnels after one refusal.
func TestOlderPeerGetsAConnectionPerSession(t *testing.T) {
	creds := newTestCreds(t)
	peer := startPeer(t, creds, []string{ALPN}, anyPort, echo)
	d := newDialer(creds, peer)
	for i := range 3 {
		if got, err := roundTrip(d, "hello "+strconv.Itoa(i)); err != nil || got != "hello "+strconv.Itoa(i) {
			t.Fatalf("session %d echoed %q, %v", i, got, err)
		}
	}
	if n := peer.conns.Load(); n != 4 {
		t.Errorf("3 sessions to an older peer took %d connections; want 4 (one to learn it takes no tunnels)", n)
	}
	peer.mu.Lock()
	defer peer.mu.Unlock()
	for _, h := range peer.headers {
		if h != (Header{Port: 5432, Protocol: Opaque}) {
			t.Errorf("an older peer read header %+v; want an opaque session for port 5432", h)
		}
	}
}

// A client that finishes sending after the application finished, and
// closes at once, as a proxy does when both directions ended: everything
// it wrote reaches the application, then a clean end — not a reset.
func TestTunnelStreamCloseAfterCloseWriteLosesNothing(t *testing.T) {
	creds := newTestCreds(t)
	type result struct {
		n   int
		err error
	}
	got := make(chan result, 1)
	peer := startPeer(t, creds, []string{ALPNTunnels, ALPN}, anyPort, func(_ uint16, c net.Conn) {
		io.WriteString(c, "bye")
		transport.CloseWrite(c)
		time.Sleep(50 * time.Millisecond) // a slow reader: the client's last bytes wait on the window
		b, err := io.ReadAll(c)
		got <- result{len(b), err}
	})
	d := newDialer(creds, peer)
	c, err := d.Dial(context.Background(), transport.Outbound, "127.0.0.1:5432", peerID, Opaque)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || string(b) != "bye" {
		t.Fatalf("read %q, %v", b, err)
	}
	const size = 1 << 20 // four stream windows
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if err := transport.CloseWrite(c); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case r := <-got:
		if r.n != size || r.err != nil {
			t.Errorf("the application read %d bytes, then %v; want %d, then the end", r.n, r.err, size)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the application never saw the end")
	}
}

// A stream whose connection the peer's side does not take (its
// application unreachable, a policy's denial) fails to open: it is reset
// before it is answered.
func TestTunnelStreamRefusedByTheApplicationSideFailsToOpen(t *testing.T) {
	creds := newTestCreds(t)
	peer := startPeer(t, creds, []string{ALPNTunnels, ALPN}, anyPort, func(port uint16, c net.Conn) {
		if port == 1 {
			c.Close() // never read nor written: refused
			return
		}
		echo(port, c)
	})
	d := newDialer(creds, peer)
	c, err := d.Dial(context.Background(), transport.Outbound, "127.0.0.1:1", peerID, Opaque)
	if err == nil {
		c.Close()
		t.Fatal("a stream its application side refused opened")
	}
	if !errors.Is(err, ErrPeerRefused) {
		t.Errorf("a stream its application side refused: %v; want it refused by the peer, not an endpoint failure", err)
	}
	if got, err := roundTrip(d, "next"); err != nil || got != "next" {
		t.Errorf("the tunnel after a refused stream echoed %q, %v", got, err)
	}
}
