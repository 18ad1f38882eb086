package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
	"time"

	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// staticCert issues a certificate for id from c's CA valid from issuedAt
// for lifetime, outside any manager.
func staticCert(t testing.TB, c *control, id meshid.ID, issuedAt time.Time, lifetime time.Duration) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	csr, _ := x509.ParseCertificateRequest(der)
	leaf, err := c.srv.CA().Issue(csr, id, lifetime, issuedAt)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: append([][]byte{leaf.Raw}, c.srv.CA().Chain()...), PrivateKey: key, Leaf: leaf}
}

func static(c *tls.Certificate) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) {
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c, nil },
		func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
}

func TestMutualTLS(t *testing.T) {
	c := startControl(t, time.Hour)
	other := startControl(t, time.Hour) // a different trust anchor
	client := startManager(t, c, web, nil)
	server := startManager(t, c, api, nil)
	stranger := startManager(t, other, web, nil)
	for _, m := range []*Manager{client, server, stranger} {
		waitReady(t, m)
	}
	addr, states := echoServer(t, server.ServerConfig())

	t.Run("same anchor, expected identity", func(t *testing.T) {
		conn, err := dialTLS(addr, client.ClientConfig(api))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cs := conn.ConnectionState()
		if cs.Version != tls.VersionTLS13 {
			t.Errorf("version %x; want TLS 1.3", cs.Version)
		}
		if id, err := PeerID(cs); err != nil || id != api {
			t.Errorf("client sees server %v, %v", id, err)
		}
		st := <-states
		if id, err := PeerID(st); err != nil || id != web {
			t.Errorf("server sees client %v, %v", id, err)
		}
	})

	expired := staticCert(t, c, web, time.Now().Add(-3*time.Hour), time.Hour)
	expiredGet, expiredClientGet := static(expired)
	expiredAddr, _ := echoServer(t, ServerConfig(c.srv.CA().AnchorPool(), expiredGet))
	valid := staticCert(t, c, web, time.Now(), time.Hour)
	_, validClientGet := static(valid)
	tls12 := client.ClientConfig(api)
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	for _, tc := range []struct {
		name string
		addr string
		cfg  *tls.Config
		want string
	}{
		{"server is not the expected identity", addr, client.ClientConfig(web), "it is for spiffe://cluster.local/ns/default/sa/api, not the expected spiffe://cluster.local/ns/default/sa/web"},
		// It trusts the server, but its own certificate is from another anchor.
		{"client from another trust anchor", addr, ClientConfig(c.srv.CA().AnchorPool(), api, stranger.GetClientCertificate), "remote error: tls: bad certificate"},
		{"client trusting another anchor", addr, stranger.ClientConfig(api), "server certificate refused: x509: certificate signed by unknown authority"},
		{"server from another trust anchor", addr, ClientConfig(other.srv.CA().AnchorPool(), api, validClientGet), "server certificate refused: x509: certificate signed by unknown authority"},
		{"client with an expired leaf", addr, ClientConfig(c.srv.CA().AnchorPool(), api, expiredClientGet), "remote error: tls: bad certificate"},
		{"server with an expired leaf", expiredAddr, ClientConfig(c.srv.CA().AnchorPool(), web, validClientGet), "server certificate refused: x509: certificate has expired"},
		{"client without a certificate", addr, ClientConfig(c.srv.CA().AnchorPool(), api, nil), "remote error: tls: certificate required"},
		{"TLS 1.2 client", addr, tls12, "protocol version not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := dialTLS(tc.addr, tc.cfg)
			if err == nil {
				conn.Close()
				t.Fatal("connection accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q; want %q", err, tc.want)
			}
		})
	}
}

// TestServerRefusalReasons checks, on the accepting side, why the client's
// certificate was refused.
func TestServerRefusalReasons(t *testing.T) {
	c := startControl(t, time.Hour)
	other := startControl(t, time.Hour)
	serverCert := staticCert(t, c, api, time.Now(), time.Hour)
	for _, tc := range []struct {
		name  string
		chain *tls.Certificate
		want  string
	}{
		{"expired leaf", staticCert(t, c, web, time.Now().Add(-3*time.Hour), time.Hour), "client certificate refused: x509: certificate has expired"},
		{"another trust anchor", staticCert(t, other, web, time.Now(), time.Hour), "client certificate refused: x509: certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			get, _ := static(serverCert)
			scfg := ServerConfig(c.srv.CA().AnchorPool(), get)
			_, clientGet := static(tc.chain)
			ccfg := ClientConfig(c.srv.CA().AnchorPool(), api, clientGet)
			sconn, cconn := tlsPipe(t, scfg, ccfg)
			errc := make(chan error, 1)
			go func() { errc <- cconn.Handshake() }()
			err := sconn.Handshake()
			<-errc
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("server handshake: %v; want %q", err, tc.want)
			}
		})
	}
}

func TestSwapKeepsEstablishedConnections(t *testing.T) {
	c := startControl(t, time.Hour)
	clientClock, serverClock := newFakeClock(), newFakeClock()
	client := startManager(t, c, web, func(cfg *Config) { cfg.After = clientClock.After })
	server := startManager(t, c, api, func(cfg *Config) { cfg.After = serverClock.After })
	clientWait, serverWait := clientClock.next(t), serverClock.next(t)
	addr, states := echoServer(t, server.ServerConfig())
	cfg := client.ClientConfig(api)

	old, err := dialTLS(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldState := <-states
	oldServer := old.ConnectionState().PeerCertificates[0]

	// Both sides renew.
	serverWait.fire <- time.Now()
	clientWait.fire <- time.Now()
	serverClock.next(t)
	clientClock.next(t)
	if server.Refreshes() != 2 || client.Refreshes() != 2 {
		t.Fatalf("refreshes %d/%d; want 2/2", client.Refreshes(), server.Refreshes())
	}
	if server.Certificate().Leaf.Equal(oldServer) {
		t.Fatal("server certificate did not change")
	}

	// The established connection is untouched and keeps working.
	for i := 0; i < 3; i++ {
		echo(t, old, "still here\n")
	}
	if !old.ConnectionState().PeerCertificates[0].Equal(oldServer) {
		t.Error("established connection's peer certificate changed")
	}

	// New connections get the new certificates, both ways.
	fresh, err := dialTLS(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	newState := <-states
	if got := fresh.ConnectionState().PeerCertificates[0]; !got.Equal(server.Certificate().Leaf) {
		t.Error("new connection did not get the server's new certificate")
	}
	if newState.PeerCertificates[0].Equal(oldState.PeerCertificates[0]) || !newState.PeerCertificates[0].Equal(client.Certificate().Leaf) {
		t.Error("new connection did not present the client's new certificate")
	}
	echo(t, fresh, "new\n")
}
