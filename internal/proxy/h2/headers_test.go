package h2

import (
	"bytes"
	"io"
	"net/http"
	"strings"
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

	// (A peer's long invalid name is not sent back in the GOAWAY's debug
	// data: a frame of at most 16 KiB, as SETTINGS_MAX_FRAME_SIZE allows.)
	longName := "X" + strings.Repeat("y", 10_000)
	for _, tc := range []struct {
		name string
		send func(fr *http2.Framer)
		want http2.ErrCode
	}{
		{"continuation after a long invalid name", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: encode(with([2]string{longName, "1"})), EndStream: true})
			fr.WriteContinuation(1, true, encode([][2]string{{"x-b", "2"}}))
		}, http2.ErrCodeProtocol},
		{"undecodable block", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndStream: true, EndHeaders: true})
		}, http2.ErrCodeCompression},
		{"continuation after a malformed field", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: encode(with([2]string{"X-Upper", "1"})), EndStream: true})
			fr.WriteContinuation(1, true, encode([][2]string{{"x-b", "2"}}))
		}, http2.ErrCodeProtocol},
		{"padding beyond the frame", func(fr *http2.Framer) {
			fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersPadded|http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 1, []byte{5})
		}, http2.ErrCodeProtocol},
		{"frame too short for its priority", func(fr *http2.Framer) {
			fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersPriority|http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 1, []byte{0, 0})
		}, http2.ErrCodeFrameSize},
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
			if len(g.DebugData()) > maxGoAwayDebug {
				t.Errorf("GOAWAY with %d bytes of debug data", len(g.DebugData()))
			}
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

// A field sent more than once keeps all its values in order, in heads and
// trailers, both ways: the field maps share one array of first values.
func TestRepeatedFields(t *testing.T) {
	multi := func(h http.Header) string {
		return strings.Join(h.Values("X-Multi"), ",") + "|" + h.Get("X-One") + "|" + strings.Join(h.Values("X-Two"), ",")
	}
	const want = "a,b,c|d|e,f"
	fill := func(h http.Header, prefix string) {
		for _, kv := range [][2]string{{"X-Multi", "a"}, {"X-Two", "e"}, {"X-Multi", "b"}, {"X-One", "d"}, {"X-Two", "f"}, {"X-Multi", "c"}} {
			h.Add(prefix+kv[0], kv[1])
		}
	}
	// Our server, net/http's client.
	got := make(chan string, 2)
	addr := ourServer(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- multi(r.Header)
		io.Copy(io.Discard, r.Body)
		got <- multi(r.Trailer)
	})}, nil)
	req, _ := http.NewRequest("POST", "http://"+addr+"/", strings.NewReader("body"))
	fill(req.Header, "")
	req.Trailer = http.Header{}
	fill(req.Trailer, "")
	resp, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if h, tr := <-got, <-got; h != want || tr != want {
		t.Errorf("our server read head %q, trailers %q; want %q", h, tr, want)
	}
	// Our client, net/http's server.
	srv := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		fill(w.Header(), "")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "body")
		fill(w.Header(), http.TrailerPrefix)
	})
	cc := dialClient(t, srv.Listener.Addr().String(), ClientConfig{})
	req, _ = http.NewRequest("GET", srv.URL, nil)
	resp, err = cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if h, tr := multi(resp.Header), multi(resp.Trailer); h != want || tr != want {
		t.Errorf("our client read head %q, trailers %q; want %q", h, tr, want)
	}
}

// The reader lets go of a block's fields when it reads the next frame:
// they are not kept, with their strings, for as long as the connection.
func TestHeaderReaderReleasesFields(t *testing.T) {
	var wire bytes.Buffer
	w := http2.NewFramer(&wire, nil)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/"}, {"x-secret", "s"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
	w.WritePing(false, [8]byte{})
	r := newHeaderReader(http2.NewFramer(nil, &wire))
	f, err := r.readFrame()
	if err != nil {
		t.Fatal(err)
	}
	fields := f.(*http2.MetaHeadersFrame).Fields
	if len(fields) != 5 || fields[4].Value != "s" {
		t.Fatalf("fields %v", fields)
	}
	if _, err := r.readFrame(); err != nil {
		t.Fatal(err)
	}
	for _, hf := range fields {
		if hf != (hpack.HeaderField{}) {
			t.Fatalf("after the next frame the block's fields still hold %v", fields)
		}
	}
}
