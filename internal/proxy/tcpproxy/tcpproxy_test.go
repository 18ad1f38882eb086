package tcpproxy

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/detect"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// A connection as the stacks hand it over — detection's wrapper around the
// meter's around a transport.Socket — is reset with an RST: unwrap reaches
// the TCP connection under all three.
func TestResetReachesTheTCPConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	sock := transport.NewSocket(accepted)
	if _, ok := sock.(*transport.Socket); !ok {
		t.Fatalf("NewSocket gave %T", sock)
	}
	tcp := metrics.NewRegistry().TCP(metrics.Labels{Direction: "inbound"}, "src")
	c := detect.NewConn(transport.NewMeteredConn(sock, tcp), nil)
	if s := unwrap(c); s.raw != accepted {
		t.Fatalf("unwrap reached %T, want the *net.TCPConn", s.raw)
	}

	reset(c)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = peer.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer read after reset: %v; want ECONNRESET (an RST, not a FIN)", err)
	}
}
