package identity

import (
	"crypto/tls"
	"testing"
	"time"
)

// BenchmarkResumedHandshake is the CPU of one mTLS handshake between two
// proxies, client and server together, when the client resumes a session
// (as a proxy does for every new connection to a peer after its first):
// with Go's default key exchange (post-quantum X25519MLKEM768 first, which
// the proxies use) and with X25519 alone, to show what the former costs.
func BenchmarkResumedHandshake(b *testing.B) {
	c := startControl(b, time.Hour)
	server, _ := static(staticCert(b, c, api, time.Now(), time.Hour))
	_, client := static(staticCert(b, c, web, time.Now(), time.Hour))
	for _, kx := range []struct {
		name   string
		curves []tls.CurveID
	}{{"X25519MLKEM768", nil}, {"X25519", []tls.CurveID{tls.X25519}}} {
		b.Run(kx.name, func(b *testing.B) {
			srv := ServerConfig(c.srv.CA().AnchorPool(), server)
			cli := ClientConfig(c.srv.CA().AnchorPool(), api, client)
			srv.CurvePreferences, cli.CurvePreferences = kx.curves, kx.curves
			benchResumed(b, srv, cli)
		})
	}
}

func benchResumed(b *testing.B, srv, cli *tls.Config) {
	cli.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	cli.ServerName = "api" // the cache key (a proxy's is the peer's address)
	// Over a loopback pair (tlsPipe); the client reads one byte the server
	// writes, which takes in the session ticket sent after the handshake.
	handshake := func() bool {
		sc, cc := tlsPipe(b, srv, cli)
		done := make(chan error, 1)
		go func() {
			if err := sc.Handshake(); err != nil {
				done <- err
				return
			}
			_, err := sc.Write([]byte{1})
			done <- err
		}()
		if _, err := cc.Read(make([]byte, 1)); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		sc.Close()
		cc.Close()
		return cc.ConnectionState().DidResume
	}
	handshake() // the full one, which gives the session
	b.ResetTimer()
	for b.Loop() {
		if !handshake() {
			b.Fatal("the session was not resumed")
		}
	}
}
