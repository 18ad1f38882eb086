package detect

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	hello := clientHello(t, "db.example.com")
	tests := []struct {
		name string
		in   string
		want Protocol
		sni  string
		more bool
	}{
		{"empty", "", Opaque, "", true},
		{"h2 preface", string(http2Preface) + "\x00\x00", HTTP2, "", false},
		{"partial h2 preface", "PRI * HTTP/2", Opaque, "", true},
		{"http/1.1 get", "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", HTTP1, "", false},
		{"http/1.0 bare LF", "POST /x HTTP/1.0\n", HTTP1, "", false},
		{"blank lines before the request line", "\r\n\nGET / HTTP/1.1\r\n", HTTP1, "", false},
		{"only blank lines so far", "\r\n\r\n", HTTP1, "", true},
		{"blank lines then a request line longer than detection peeks", "\r\nGET /" + strings.Repeat("a", MaxPeek), HTTP1, "", false},
		{"custom method", "PURGE /cache HTTP/1.1\r\n", HTTP1, "", false},
		{"partial request line", "GET /index.ht", Opaque, "", true},
		{"method only", "GET", Opaque, "", true},
		{"redis inline", "SET key value\r\n", Opaque, "", false},
		{"smtp client", "EHLO mail.example.com\r\n", Opaque, "", false},
		{"http/2.0 line that is not the preface", "GET / HTTP/2.0\r\n", Opaque, "", false},
		{"binary", "\x00\x01\x02\x03", Opaque, "", false},
		{"space first", " GET / HTTP/1.1\r\n", Opaque, "", false},
		{"tls hello", string(hello), TLS, "db.example.com", false},
		{"partial tls hello", string(hello[:40]), TLS, "", true},
		{"not tls version", "\x16\x09\x01", Opaque, "", false},
		{"long method", strings.Repeat("A", 40) + " / HTTP/1.1\r\n", Opaque, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, hello, more := Classify([]byte(tt.in))
			if sni := hello.SNI; p != tt.want || sni != tt.sni || more != tt.more {
				t.Fatalf("Classify(%q) = %v, %q, more=%v; want %v, %q, more=%v", tt.in, p, hello.SNI, more, tt.want, tt.sni, tt.more)
			}
		})
	}
}

func TestClassifyLongRequestLineIsHTTP(t *testing.T) {
	line := "GET /" + strings.Repeat("a", MaxPeek) // no line end within the peek limit
	if p, _, more := Classify([]byte(line)[:MaxPeek]); p != HTTP1 || more {
		t.Fatalf("got %v more=%v; want HTTP1 so the HTTP server can answer 414", p, more)
	}
}

// clientHello captures the first flight of a real crypto/tls client.
func clientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Handshake()
		a.Close()
	}()
	buf := make([]byte, 0, 4096)
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		tmp := make([]byte, 4096)
		n, err := b.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if _, complete := ParseClientHello(buf); complete || err != nil {
			break
		}
	}
	b.Close()
	return buf
}

func FuzzClassify(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add(http2Preface)
	f.Add(clientHello(f, "a.b"))
	f.Add([]byte("\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, hello, more := Classify(b)
		if len(b) >= MaxPeek && more {
			t.Fatalf("Classify wants more after %d bytes", len(b))
		}
		if (hello.SNI != "" || len(hello.ALPN) > 0) && p != TLS {
			t.Fatalf("ClientHello %+v on a %v connection", hello, p)
		}
		// Deciding must be stable: more bytes never change a final answer
		// for HTTP/2 or HTTP/1.
		if !more && (p == HTTP1 || p == HTTP2) {
			if p2, _, _ := Classify(append(append([]byte(nil), b...), 'x')); p2 != p {
				t.Fatalf("Classify changed its mind: %v then %v", p, p2)
			}
		}
	})
}

func TestParseClientHelloALPN(t *testing.T) {
	a, b := net.Pipe()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: "svc.local", NextProtos: []string{"trellis.mesh/v1", "h2"}, InsecureSkipVerify: true})
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Handshake()
		a.Close()
	}()
	defer b.Close()
	buf := make([]byte, 0, 4096)
	var hello Hello
	for complete := false; !complete; {
		tmp := make([]byte, 4096)
		n, err := b.Read(tmp)
		if err != nil {
			t.Fatal(err)
		}
		buf = append(buf, tmp[:n]...)
		hello, complete = ParseClientHello(buf)
	}
	if hello.SNI != "svc.local" || len(hello.ALPN) != 2 || hello.ALPN[0] != "trellis.mesh/v1" || hello.ALPN[1] != "h2" {
		t.Fatalf("parsed %+v", hello)
	}
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(clientHello(f, "example.com"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		hello, complete := ParseClientHello(b)
		if !complete && (hello.SNI != "" || hello.ALPN != nil) {
			t.Fatal("fields from an incomplete record")
		}
		if len(hello.SNI) > len(b) || len(hello.ALPN) > len(b) {
			t.Fatal("more parsed than there was input")
		}
	})
}
