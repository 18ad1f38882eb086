package e2e

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestWebSocket echoes text, binary and 1 MiB messages over a WebSocket
// upgraded through both proxies, then closes it cleanly.
func TestWebSocket(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		tp := newTopology(t, mode, webBackend)
		serveWeb(t, tp.ln[webBackend.name])
		through := tp.through(t, webBackend, "request_total")
		d := websocket.Dialer{NetDialContext: tp.dialer.DialContext, HandshakeTimeout: 10 * time.Second, Proxy: nil}
		c, resp, err := d.DialContext(t.Context(), "ws://"+tp.addr[webBackend.name]+"/ws", http.Header{"Origin": {"http://e2e.test"}})
		if err != nil {
			status := ""
			if resp != nil {
				status = resp.Status
			}
			t.Fatalf("WebSocket handshake: %v %s", err, status)
		}
		defer c.Close()
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("handshake status %s, want 101", resp.Status)
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		for _, m := range []struct {
			name string
			typ  int
			data []byte
		}{
			{"text", websocket.TextMessage, []byte("hello, trellis ✓")},
			{"binary", websocket.BinaryMessage, []byte{0, 1, 2, 3, 0xff, 0xfe, '\r', '\n'}},
			{"empty", websocket.TextMessage, nil},
			{"1MiB-binary", websocket.BinaryMessage, pattern(1 << 20)},
			{"1MiB-text", websocket.TextMessage, bytes.Repeat([]byte("0123456789abcdef"), 1<<16)},
		} {
			if err := c.WriteMessage(m.typ, m.data); err != nil {
				t.Fatalf("%s: write: %v", m.name, err)
			}
			typ, got, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("%s: read echo: %v", m.name, err)
			}
			if typ != m.typ || !bytes.Equal(got, m.data) {
				t.Errorf("%s: echo is type %d with %d bytes, want type %d with %d bytes (identical)", m.name, typ, len(got), m.typ, len(m.data))
			}
		}
		if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")); err != nil {
			t.Fatalf("write close: %v", err)
		}
		_, _, err = c.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure || ce.Text != "bye" {
			t.Errorf("after close: %v, want the server's close frame 1000 \"bye\"", err)
		}
		through()
	})
}
