package h2

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// frames builds seed inputs: a sequence of raw frames.
type frames struct{ bytes.Buffer }

func (f *frames) frame(typ http2.FrameType, flags http2.Flags, stream uint32, payload []byte) *frames {
	f.Write([]byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), byte(typ), byte(flags)})
	binary.Write(f, binary.BigEndian, stream)
	f.Write(payload)
	return f
}

func block(fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

// serveWithin runs fn and fails if it does not return within d: a state
// machine that waits for ever on some input is a defect too.
func serveWithin(t *testing.T, d time.Duration, fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatal("did not end")
	}
}

// FuzzServerConn feeds a server connection arbitrary frames after the
// preface, from a client that then hangs up: the server must neither
// panic nor hang, whatever the frames do to its streams, windows and
// HPACK state.
func FuzzServerConn(f *testing.F) {
	req := block(":method", "POST", ":scheme", "http", ":path", "/", ":authority", "a", "content-length", "3")
	var seed frames
	seed.frame(http2.FrameSettings, 0, 0, []byte{0, 4, 0, 0, 0, 1}) // INITIAL_WINDOW_SIZE 1
	seed.frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, req)
	seed.frame(http2.FrameData, http2.FlagDataEndStream, 1, []byte("abc"))
	seed.frame(http2.FrameWindowUpdate, 0, 1, []byte{0, 0, 0, 100})
	seed.frame(http2.FrameRSTStream, 0, 1, []byte{0, 0, 0, 8})
	f.Add(seed.Bytes())
	var trailers frames
	trailers.frame(http2.FrameSettings, 0, 0, nil)
	trailers.frame(http2.FrameHeaders, 0, 3, block(":method", "GET", ":scheme", "http", ":path", "/x", "te", "trailers"))
	trailers.frame(http2.FrameContinuation, http2.FlagContinuationEndHeaders, 3, nil)
	trailers.frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 3, block("x-t", "1"))
	trailers.frame(http2.FramePing, 0, 0, make([]byte, 8))
	f.Add(trailers.Bytes())
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		w.Write(bytes.Repeat([]byte("x"), 100))
	}), IdleTimeout: time.Second}
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		go io.Copy(io.Discard, client)
		go func() {
			client.Write([]byte(http2.ClientPreface))
			client.Write(in)
			time.Sleep(10 * time.Millisecond) // let handlers run before the hang-up
			client.Close()
		}()
		serveWithin(t, 5*time.Second, func() { srv.ServeConn(context.Background(), server, context.Background()) })
	})
}

// FuzzClientConn answers a client's requests with arbitrary frames: the
// client must neither panic nor hang, and every request must end.
func FuzzClientConn(f *testing.F) {
	var seed frames
	seed.frame(http2.FrameSettings, 0, 0, []byte{0, 3, 0, 0, 0, 1}) // MAX_CONCURRENT_STREAMS 1
	seed.frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, block(":status", "200", "content-length", "2"))
	seed.frame(http2.FrameData, 0, 1, []byte("ok"))
	seed.frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 1, block("grpc-status", "0"))
	seed.frame(http2.FrameGoAway, 0, 0, []byte{0, 0, 0, 1, 0, 0, 0, 0})
	f.Add(seed.Bytes())
	var early frames
	early.frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, block(":status", "103", "link", "</a>"))
	early.frame(http2.FrameRSTStream, 0, 1, []byte{0, 0, 0, 7})
	early.frame(http2.FrameWindowUpdate, 0, 0, []byte{0x7f, 0xff, 0xff, 0xff})
	f.Add(early.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		go io.Copy(io.Discard, server)
		cc, err := NewClientConn(client, ClientConfig{ExpectContinueWait: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			server.Write(in)
			time.Sleep(10 * time.Millisecond)
			server.Close()
		}()
		serveWithin(t, 5*time.Second, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			for _, method := range []string{"GET", "POST"} {
				req, _ := http.NewRequestWithContext(ctx, method, "http://a/", bytes.NewReader([]byte("body")))
				if resp, err := cc.RoundTrip(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
		cc.Close()
	})
}
