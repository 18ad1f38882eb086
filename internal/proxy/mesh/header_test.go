package mesh

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, h := range []Header{{Port: 8080, Protocol: HTTP2}, {Port: 5432, Protocol: Opaque}, {Port: 65535, Protocol: HTTP1}, {Protocol: Tunnel}} {
		wire := h.Append(nil)
		r := bufio.NewReader(io.MultiReader(bytes.NewReader(wire), bytes.NewReader([]byte("payload"))))
		got, err := ReadHeader(r)
		if err != nil || got != h {
			t.Fatalf("ReadHeader(%x) = %+v, %v; want %+v", wire, got, err, h)
		}
		rest, _ := io.ReadAll(r)
		if string(rest) != "payload" {
			t.Fatalf("header consumed payload bytes: %q left", rest)
		}
	}
}

func TestHeaderRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n"),
		Header{Port: 80, Protocol: 9}.Append(nil),
		Header{Port: 0, Protocol: HTTP2}.Append(nil),
		Header{Port: 5432, Protocol: Tunnel}.Append(nil), // a tunnel's streams name the ports
		append([]byte("TRLS\x02"), 1, 0, 80),
	} {
		if _, err := ReadHeader(bufio.NewReader(bytes.NewReader(b))); !errors.Is(err, errBadHeader) {
			t.Errorf("ReadHeader(%q) = %v; want a header error", b, err)
		}
	}
	if _, err := ReadHeader(bufio.NewReader(bytes.NewReader([]byte("TRL")))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short header: %v", err)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(Header{Port: 8080, Protocol: HTTP2}.Append(nil))
	f.Add([]byte("TRLS\x01\x03\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		if again := h.Append(nil); !bytes.Equal(again, b) {
			t.Fatalf("accepted %x but re-encodes as %x", b, again)
		}
	})
}
