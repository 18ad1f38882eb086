package httpproxy

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"
)

// The scanner finds the same frames however the byte stream is cut into
// reads, and knows when a cut falls on a frame boundary.
func FuzzFrameScanner(f *testing.F) {
	f.Add(uint8(1), uint8(7))
	f.Add(uint8(9), uint8(1))
	f.Add(uint8(200), uint8(3))
	f.Fuzz(func(t *testing.T, first, rest uint8) {
		var buf bytes.Buffer
		fr := http2.NewFramer(&buf, nil)
		fr.WriteSettings()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte("abc"), EndHeaders: true})
		fr.WriteData(1, false, bytes.Repeat([]byte("x"), 300))
		fr.WriteRSTStream(1, http2.ErrCodeCancel)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, EndHeaders: true})
		fr.WritePing(false, [8]byte{})
		want := []uint32{0x4_0, 0x1_1, 0x0_1, 0x3_1, 0x1_3, 0x6_0}
		ends := map[int]bool{}
		for off, b := 0, buf.Bytes(); off < len(b); {
			n := 9 + (int(b[off])<<16 | int(b[off+1])<<8 | int(b[off+2]))
			off += n
			ends[off] = true
		}

		var s frameScanner
		var got []uint32
		b := buf.Bytes()
		for off, size := 0, max(int(first), 1); off < len(b); off, size = off+size, max(int(rest), 1) {
			end := min(off+size, len(b))
			boundary := s.scan(b[off:end], func(typ byte, stream uint32) { got = append(got, uint32(typ)<<4|stream) })
			if boundary != ends[end] {
				t.Fatalf("after byte %d the scanner says boundary=%v", end, boundary)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("frames %x, want %x", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("frames %x, want %x", got, want)
			}
		}
	})
}
