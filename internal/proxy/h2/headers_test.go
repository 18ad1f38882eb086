package h2

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A malformed header block resets its stream (RFC 9113 §8.1.1) and the
// connection goes on; one that cannot be decoded, or that goes on after
// it was found malformed, ends the connection with the error's code.
func TestMalformedHeaderBlocks(t *testing.T) {
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}, nil)
	get := [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "raw.test"}, {":path", "/"}}
	with := func(extra ...[2]string) [][2]string { return append(append([][2]string{}, get...), extra...) }
	encode := func(fields [][2]string) []byte {
		var b bytes.Buffer
		enc := hpack.NewEncoder(&b)
		for _, f := range fields {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return b.Bytes()
	}
	for _, tc := range []struct {
		name  string
		block []byte
	}{
		{"pseudo after regular", encode([][2]string{{":method", "GET"}, {"x-a", "1"}, {":scheme", "http"}, {":authority", "raw.test"}, {":path", "/"}})},
		{"upper-case name", encode(with([2]string{"X-Upper", "1"}))},
		{"name not a token", encode(with([2]string{"x a", "1"}))},
		{"value with a NUL", encode(with([2]string{"x-a", "a\x00b"}))},
		{"unknown pseudo", encode(with([2]string{":color", "red"}))},
		{"duplicate pseudo", encode(with([2]string{":path", "/again"}))},
		{"request and response pseudos", encode([][2]string{{":status", "200"}, {":method", "GET"}, {":scheme", "http"}, {":authority", "raw.test"}, {":path", "/"}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, fr := rawClient(t, addr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: tc.block, EndStream: true, EndHeaders: true})
			writeGet(fr, 3, "/")
			if code := resetOf(t, fr, 1); code != http2.ErrCodeProtocol {
				t.Fatalf("stream 1 ended with %v; want RST_STREAM PROTOCOL_ERROR", code)
			}
			if !answered(t, fr, 3) {
				t.Fatal("the next stream on the connection got no response")
			}
		})
	}

	for _, tc := range []struct {
		name string
		send func(fr *http2.Framer)
		want http2.ErrCode
	}{
		{"undecodable block", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndStream: true, EndHeaders: true})
		}, http2.ErrCodeCompression},
		{"continuation after a malformed field", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: encode(with([2]string{"X-Upper", "1"})), EndStream: true})
			fr.WriteContinuation(1, true, encode([][2]string{{"x-b", "2"}}))
		}, http2.ErrCodeProtocol},
		{"truncated block", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: encode(get)[:3], EndStream: true, EndHeaders: true})
		}, http2.ErrCodeCompression},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, fr := rawClient(t, addr)
			tc.send(fr)
			if code := goAwayOf(t, fr); code != tc.want {
				t.Fatalf("connection ended with %v; want GOAWAY %v", code, tc.want)
			}
		})
	}
}

// A header block split over CONTINUATION frames is read whole, and each
// block's fields are its own though the reader keeps one slice for all.
func TestHeaderBlockInContinuations(t *testing.T) {
	got := make(chan string, 2)
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.Path + " " + r.Header.Get("X-Long")
	})}, nil)
	_, fr := rawClient(t, addr)
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	long := string(bytes.Repeat([]byte("v"), 40_000))
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "raw.test"}, {":path", "/first"}, {"x-long", long}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := b.Bytes()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:10_000], EndStream: true})
	for rest := block[10_000:]; len(rest) > 0; {
		n := min(len(rest), 12_000) // (frames of at most 16 KiB)
		fr.WriteContinuation(1, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	writeGet(fr, 3, "/second")
	want := map[string]bool{"/first " + long: true, "/second ": true}
	for range 2 {
		select {
		case g := <-got:
			if !want[g] {
				t.Fatalf("handler got %.40q…; want the first's long field, and none in the second", g)
			}
			delete(want, g)
		case <-time.After(5 * time.Second):
			t.Fatal("no request reached the handler")
		}
	}
}

// resetOf reads frames until stream id is reset or answered, and returns
// the reset's code (NO_ERROR if answered).
func resetOf(t *testing.T, fr *http2.Framer, id uint32) http2.ErrCode {
	t.Helper()
	for {
		f := readFrame(t, fr)
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return f.ErrCode
			}
		case *http2.HeadersFrame:
			if f.StreamID == id {
				return http2.ErrCodeNo
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v before stream %d ended", f.ErrCode, id)
		}
	}
}

// answered reads frames until stream id gets its response head.
func answered(t *testing.T, fr *http2.Framer, id uint32) bool {
	t.Helper()
	return resetOf(t, fr, id) == http2.ErrCodeNo
}

// goAwayOf reads frames until a GOAWAY, and returns its code.
func goAwayOf(t *testing.T, fr *http2.Framer) http2.ErrCode {
	t.Helper()
	for {
		if g, ok := readFrame(t, fr).(*http2.GoAwayFrame); ok {
			return g.ErrCode
		}
	}
}

// readFrame reads one frame, failing the test on an error or after 5 s.
func readFrame(t *testing.T, fr *http2.Framer) http2.Frame {
	t.Helper()
	type result struct {
		f   http2.Frame
		err error
	}
	c := make(chan result, 1)
	go func() { f, err := fr.ReadFrame(); c <- result{f, err} }()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatalf("reading a frame: %v", r.err)
		}
		return r.f
	case <-time.After(5 * time.Second):
		t.Fatal("no frame in 5 s")
		return nil
	}
}
