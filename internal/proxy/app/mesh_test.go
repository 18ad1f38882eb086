package app_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/meshtest"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
	"github.com/trellis-mesh/trellis/internal/proxy/proxytest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// wire sits between two proxies like the network does: it forwards bytes
// and keeps a copy of everything, so a test can look for plaintext.
type wire struct {
	ln    net.Listener
	mu    sync.Mutex
	seen  bytes.Buffer
	conns atomic.Int64
}

func newWire(t *testing.T, to string) *wire { return newSlowWire(t, to, 0) }

// newSlowWire is a wire that holds the client's first bytes back for
// delay, as a slow network or a client that waits would.
func newSlowWire(t *testing.T, to string, delay time.Duration) *wire {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			w.conns.Add(1)
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				defer up.Close()
				go func() {
					time.Sleep(delay)
					io.Copy(io.MultiWriter(up, w), c)
					up.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(io.MultiWriter(c, w), up)
			}()
		}
	}()
	return w
}

func (w *wire) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen.Write(p)
}

func (w *wire) contains(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Contains(w.seen.Bytes(), []byte(s))
}

func (w *wire) port() uint16 { return port(w.ln.Addr().String()) }

// A mesh connection whose client waits before its handshake (so that the
// server proxy has already dialled the port the connection came in for, to
// see whether the server speaks first) goes to the port its header names,
// which that port's policy decides, never over the early connection to the
// other port.
func TestMeshSessionGoesToThePortItsHeaderNames(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	var received atomic.Int64 // bytes the application's main port got
	mainPort := testkit.Serve(t, func(c net.Conn) {
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	other := testkit.EchoServer(t)
	in := proxytest.Config(t)
	in.AppAddr = mainPort
	in.ServicePorts = []config.ServicePort{{Port: port(other), TargetPort: port(other)}}
	server := ids.Join(t, in, "shop", "api")
	b := proxytest.Start(t, in)

	w := newSlowWire(t, b.InboundAddr.String(), 3*in.ServerFirstDelay)
	out := proxytest.Config(t)
	ids.Join(t, out, "shop", "web")
	out.MeshPort = w.port()
	out.OpaquePorts = map[uint16]bool{port(other): true}
	local := port(testkit.FreeAddr(t))
	out.Upstreams = []config.Upstream{{Name: "other", LocalPort: local, Target: other, Identity: server}}
	a := proxytest.Start(t, out)

	c, err := net.Dial("tcp", a.UpstreamAddrs["other"].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "for the other port\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "for the other port\n" {
		t.Errorf("the port the header named echoed %q, %v", line, err)
	}
	if n := received.Load(); n != 0 {
		t.Errorf("the port the client first dialled received %d bytes", n)
	}
}

// A CONNECT tunnel through the outbound port to a meshed destination is
// served as a connection intercepted on its way there: the HTTP inside it
// crosses the mesh over mTLS and reaches the application with the client's
// proven identity.
func TestConnectTunnelToAMeshedTargetIsMeshed(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	app := identityEcho(t)
	in := proxytest.Config(t)
	in.AppAddr = app
	server := ids.Join(t, in, "shop", "api")
	b := proxytest.Start(t, in)
	w := newWire(t, b.InboundAddr.String())
	out := proxytest.Config(t)
	client := ids.Join(t, out, "shop", "web")
	out.MeshPort = w.port()
	out.EndpointIdentities = map[string]string{app: server}
	a := proxytest.Start(t, out)

	c, err := net.Dial("tcp", a.OutboundAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", app, app)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	fmt.Fprintf(c, "GET /through-the-tunnel HTTP/1.1\r\nHost: api\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Client-Id"); got != client {
		t.Errorf("the application saw l5d-client-id %q through the tunnel, want the proven %q", got, client)
	}
	if w.contains("/through-the-tunnel") || !w.contains("trellis.mesh/v1") {
		t.Error("the tunnel's request did not cross the mesh over mTLS")
	}
}

// meshPair starts a server-side proxy in front of app and a client-side
// proxy whose upstream port leads to it over mTLS, through a recording
// wire. It returns the upstream address and both identities.
func meshPair(t *testing.T, ids *meshtest.Identity, app string) (entry string, w *wire, client, server string) {
	return meshPairWith(t, ids, app, nil)
}

// meshPairWith is meshPair with the server proxy's configuration edited.
func meshPairWith(t *testing.T, ids *meshtest.Identity, app string, edit func(*config.Config)) (entry string, w *wire, client, server string) {
	p := startMeshPair(t, ids, app, edit)
	return p.entry, p.wire, p.client, p.server
}

// meshProxies are a client proxy and a server proxy in front of an
// application, their mesh connections crossing a wire.
type meshProxies struct {
	entry          string // the client proxy's upstream port for the application
	wire           *wire
	client, server string // their identities
	in             *proxytest.Proxy
}

func startMeshPair(t *testing.T, ids *meshtest.Identity, app string, edit func(*config.Config)) meshProxies {
	in := proxytest.Config(t)
	in.AppAddr = app
	// The app's port is opaque on the server side, as databases' are by
	// default: mTLS must still be terminated before the opaque rule applies.
	in.OpaquePorts = map[uint16]bool{port(app): true}
	server := ids.Join(t, in, "shop", "api")
	if edit != nil {
		edit(in)
	}
	b := proxytest.Start(t, in)

	w := newWire(t, b.InboundAddr.String())
	out := proxytest.Config(t)
	client := ids.Join(t, out, "shop", "web")
	out.MeshPort = w.port()
	local := port(testkit.FreeAddr(t))
	out.Upstreams = []config.Upstream{{Name: "api", LocalPort: local, Target: app, Identity: server}}
	a := proxytest.Start(t, out)
	return meshProxies{entry: a.UpstreamAddrs["api"].String(), wire: w, client: client, server: server, in: b}
}

// identityEcho answers with who the mesh said the client is and what it
// sent.
func identityEcho(t *testing.T) string {
	return serveApp(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Client-Id", strings.Join(r.Header.Values("L5d-Client-Id"), ";"))
		// What a CGI-style framework would read as the client id too
		// (HTTP_L5D_CLIENT_ID: "_" and "-" alike).
		for k, vs := range r.Header {
			if k != "L5d-Client-Id" && strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "L5d-Client-Id") {
				w.Header()["X-Client-Id-Alike"] = vs
			}
		}
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("X-Orig-Proto", r.Header.Get("L5d-Orig-Proto"))
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "echo:%s", body)
	})
}

// serveApp runs h as an application on a loopback port, over HTTP/1.1 and
// h2c, until the test ends.
func serveApp(t *testing.T, h http.HandlerFunc) string { return serve(t, &http.Server{Handler: h}) }

// serve runs srv on a loopback port, over HTTP/1.1 and h2c, until the test ends.
func serve(t *testing.T, srv *http.Server) string {
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestMeshCarriesHTTPEncryptedWithProvenIdentity(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	entry, w, client, _ := meshPair(t, ids, identityEcho(t))

	const secret = "the-quick-brown-fox-secret-payload"
	req, _ := http.NewRequest("POST", "http://"+entry+"/"+secret, strings.NewReader(secret))
	req.Header.Set("L5d-Client-Id", "spiffe://cluster.local/ns/evil/sa/forged")
	req.Header["L5d_client_id"] = []string{"spiffe://cluster.local/ns/evil/sa/forged-too"}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "echo:"+secret {
		t.Fatalf("got %d %q (%s)", resp.StatusCode, body, resp.Header.Get("l5d-proxy-error"))
	}
	if got := resp.Header.Get("X-Client-Id"); got != client {
		t.Errorf("the application saw l5d-client-id %q; want the proven %q and nothing forged", got, client)
	}
	if got := resp.Header.Get("X-Client-Id-Alike"); got != "" {
		t.Errorf("the application saw a forged l5d_client_id %q", got)
	}
	if resp.Header.Get("X-Proto") != "HTTP/1.1" || resp.Header.Get("X-Orig-Proto") != "" {
		t.Errorf("the application saw %s with l5d-orig-proto %q; want HTTP/1.1 restored and the field gone", resp.Header.Get("X-Proto"), resp.Header.Get("X-Orig-Proto"))
	}

	// h2c from the client stays HTTP/2 all the way.
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2client := &http.Client{Transport: &http.Transport{Protocols: &p}}
	resp, err = h2client.Get("http://" + entry + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Header.Get("X-Proto") != "HTTP/2.0" || resp.Header.Get("X-Client-Id") != client {
		t.Errorf("h2c request reached the app as %s from %q", resp.Header.Get("X-Proto"), resp.Header.Get("X-Client-Id"))
	}

	if w.contains(secret) || w.contains("HTTP/1.1") || w.contains("L5d-Client-Id") {
		t.Fatal("plaintext HTTP crossed the wire between the proxies")
	}
	if !w.contains("trellis.mesh/v1") {
		t.Fatal("no mesh ClientHello seen on the wire: was this TLS at all?")
	}
}

func TestMeshMultiplexesConcurrentHTTP1Requests(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	entry, w, _, _ := meshPair(t, ids, identityEcho(t))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 50}}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get("http://" + entry + "/")
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := w.conns.Load(); n != 1 {
		t.Fatalf("50 concurrent HTTP/1 requests used %d connections between the proxies; want 1", n)
	}
}

func TestMeshCarriesOpaqueTCPEncrypted(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	entry, w, _, _ := meshPair(t, ids, testkit.EchoServer(t))
	c, err := net.Dial("tcp", entry)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	const secret = "\x00binary-database-secret\x01"
	c.Write([]byte(secret))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != secret {
		t.Fatalf("echo %q, %v", got, err)
	}
	if w.contains("binary-database-secret") {
		t.Fatal("opaque payload crossed the wire in plaintext")
	}
}

// Opaque connections between two proxies are streams of one mTLS
// connection, opened without a handshake each, encrypted, each counted
// by the server proxy as a connection from the client's proven identity.
func TestMeshTunnelsOpaqueConnections(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	app := testkit.EchoServer(t)
	p := startMeshPair(t, ids, app, nil)
	const conns = 20
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c, err := net.Dial("tcp", p.entry)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := fmt.Sprintf("tunnelled-secret-%d", i)
			io.WriteString(c, msg)
			c.(*net.TCPConn).CloseWrite()
			if got, err := io.ReadAll(c); err != nil || string(got) != msg {
				t.Errorf("connection %d echoed %q, %v", i, got, err)
			}
		})
	}
	wg.Wait()
	if n := p.wire.conns.Load(); n != 1 {
		t.Errorf("%d opaque connections took %d connections between the proxies; want 1", conns, n)
	}
	if p.wire.contains("tunnelled-secret") {
		t.Fatal("opaque payload crossed the wire in plaintext")
	}
	in := map[string]string{"direction": "inbound", "peer": "src", "tls": "true", "client_id": p.client, "target_addr": app}
	var closed float64
	for deadline := time.Now().Add(2 * time.Second); closed < conns && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		closed = sum(scrape(t, p.in.AdminAddr.String()), "tcp_close_total", in)
	}
	if closed != conns {
		t.Errorf("the server proxy counted %v connections closed from %s to %s; want %d", closed, p.client, app, conns)
	}
}

func TestMeshRefusesPeerFromAnotherTrustAnchor(t *testing.T) {
	ours := meshtest.StartIdentity(t, time.Hour)
	theirs := meshtest.StartIdentity(t, time.Hour)
	app := identityEcho(t)

	in := proxytest.Config(t)
	in.AppAddr = app
	server := ours.Join(t, in, "shop", "api")
	b := proxytest.Start(t, in)

	out := proxytest.Config(t)
	theirs.Join(t, out, "shop", "web") // same name, other anchor
	out.MeshPort = port(b.InboundAddr.String())
	local := port(testkit.FreeAddr(t))
	out.Upstreams = []config.Upstream{{Name: "api", LocalPort: local, Target: app, Identity: server}}
	a := proxytest.Start(t, out)

	resp, err := http.Get("http://" + a.UpstreamAddrs["api"].String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("a proxy from another trust anchor got %d; want the mesh to refuse it (502)", resp.StatusCode)
	}
}

// An upstream that breaks mid-body must reach the client as a broken
// response — a cut HTTP/1 connection, a reset HTTP/2 stream — never as a
// shorter one that ends cleanly.
func TestMeshBrokenResponseIsNotPassedOffAsComplete(t *testing.T) {
	app := serveApp(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 10000))
		http.NewResponseController(w).Flush()
		time.Sleep(50 * time.Millisecond)
		panic(http.ErrAbortHandler) // net/http cuts the connection
	})
	entry, _, _, _ := meshPair(t, meshtest.StartIdentity(t, time.Hour), app)

	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	for name, c := range map[string]*http.Client{
		"HTTP/1.1": {Transport: &http.Transport{}},
		"h2c":      {Transport: &http.Transport{Protocols: &h2}},
	} {
		resp, err := c.Get("http://" + entry + "/")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("%s: a body cut after %d bytes read as complete (status %d)", name, n, resp.StatusCode)
		}
	}
}

// A peer holding a mesh certificate reaches the application's port and
// nothing else on its host: not the proxy's admin server (whose
// loopback-only endpoints it would otherwise reach from loopback).
func TestMeshReachesOnlyTheApplicationsPort(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	in := proxytest.Config(t)
	in.AppAddr = identityEcho(t)
	server := ids.Join(t, in, "shop", "api")
	b := proxytest.Start(t, in)

	out := proxytest.Config(t)
	ids.Join(t, out, "shop", "web")
	out.MeshPort = port(b.InboundAddr.String())
	api, admin := port(testkit.FreeAddr(t)), port(testkit.FreeAddr(t))
	out.Upstreams = []config.Upstream{
		{Name: "api", LocalPort: api, Target: in.AppAddr, Identity: server},
		{Name: "admin", LocalPort: admin, Target: b.AdminAddr.String(), Identity: server},
	}
	a := proxytest.Start(t, out)

	resp, err := http.Get("http://" + a.UpstreamAddrs["api"].String() + "/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the application's port: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + a.UpstreamAddrs["admin"].String() + "/metrics")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || bytes.Contains(body, []byte("request_total")) {
			t.Fatalf("a peer reached the proxy's admin server through the mesh: %d %.100q", resp.StatusCode, body)
		}
	}
}

// The path crosses the mesh byte for byte, as the client sent it.
func TestMeshKeepsThePathAsSent(t *testing.T) {
	app := serveApp(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RequestURI) })
	entry, _, _, _ := meshPair(t, meshtest.StartIdentity(t, time.Hour), app)
	for _, target := range []string{"/a|b/%7e/c%2Fd?q=1|2&r=%20", "/plain/path"} {
		c, err := net.Dial("tcp", entry)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		if string(body) != target {
			t.Errorf("sent %s; the application saw %s", target, body)
		}
	}
}

// A tunnel connection's streams count against the server proxy's
// connection limits as connections from the peer: a peer cannot hold more
// connections to the application through one tunnel than it could open.
func TestMeshTunnelStreamsCountAgainstConnectionLimits(t *testing.T) {
	p := startMeshPair(t, meshtest.StartIdentity(t, time.Hour), testkit.EchoServer(t), func(c *config.Config) {
		c.MaxConnections, c.MaxConnectionsPerSource = 10, 3 // the tunnel itself and two streams
	})
	open := func() (net.Conn, error) {
		c, err := net.Dial("tcp", p.entry)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "\x00not HTTP") // nothing for detection to wait on
		_, err = io.ReadFull(c, make([]byte, 9))
		return c, err
	}
	first, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(); err != nil {
		t.Fatal(err)
	}
	if _, err := open(); err == nil {
		t.Fatal("a third stream was served beside the tunnel and two streams from one source; want it refused")
	}
	first.Close()
	var err2 error
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err2 = open(); err2 == nil {
			return
		}
	}
	t.Fatalf("a stream after one closed was still refused: %v", err2)
}
