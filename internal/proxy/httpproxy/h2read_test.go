package httpproxy

import (
	"bytes"
	"io"
	"testing"

	"golang.org/x/net/http2"
)

// chunkReader returns src in reads of the given sizes (the last repeated).
type chunkReader struct {
	src   []byte
	sizes []int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.src) == 0 {
		return 0, io.EOF
	}
	n := min(r.sizes[0], len(p), len(r.src))
	if len(r.sizes) > 1 {
		r.sizes = r.sizes[1:]
	}
	copy(p, r.src[:n])
	r.src = r.src[n:]
	return n, nil
}

// The reader passes every frame through unchanged, but SETTINGS frames
// with one value per setting, and reports the same frames, however the
// connection's bytes arrive and however net/http's server reads them.
func FuzzClientReader(f *testing.F) {
	f.Add(uint8(1), uint8(7), uint8(9))
	f.Add(uint8(9), uint8(1), uint8(255))
	f.Add(uint8(200), uint8(3), uint8(1))
	f.Fuzz(func(t *testing.T, first, rest, readSize uint8) {
		frames := func(settings ...http2.Setting) []byte {
			var buf bytes.Buffer
			buf.WriteString(http2.ClientPreface)
			fr := http2.NewFramer(&buf, nil)
			fr.WriteSettings()
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte("abc"), EndHeaders: true})
			fr.WriteData(1, false, bytes.Repeat([]byte("x"), 300))
			fr.WriteSettings(settings...)
			fr.WriteRSTStream(1, http2.ErrCodeCancel)
			fr.WriteSettingsAck()
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, EndHeaders: true})
			fr.WritePing(false, [8]byte{})
			return buf.Bytes()
		}
		in := frames(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 7},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		want := frames(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 7}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		wantFrames := []uint32{0x4_0, 0x1_1, 0x0_1, 0x4_0, 0x3_1, 0x4_0, 0x1_3, 0x6_0}

		var got []uint32
		r := newClientReader(&chunkReader{src: in, sizes: []int{max(int(first), 1), max(int(rest), 1)}},
			func(typ byte, stream uint32) { got = append(got, uint32(typ)<<4|stream) })
		var out bytes.Buffer
		p := make([]byte, max(int(readSize), 1))
		for {
			n, err := r.Read(p)
			out.Write(p[:n])
			if err == io.EOF {
				break
			}
			if err != nil || n == 0 {
				t.Fatalf("Read = %d, %v", n, err)
			}
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("output differs:\n got %x\nwant %x", out.Bytes(), want)
		}
		if len(got) != len(wantFrames) {
			t.Fatalf("frames %x, want %x", got, wantFrames)
		}
		for i := range wantFrames {
			if got[i] != wantFrames[i] {
				t.Fatalf("frames %x, want %x", got, wantFrames)
			}
		}
	})
}

func TestNormalizeSettings(t *testing.T) {
	frame := func(s ...http2.Setting) []byte {
		var buf bytes.Buffer
		http2.NewFramer(&buf, nil).WriteSettings(s...)
		return buf.Bytes()
	}
	s := func(id http2.SettingID, v uint32) http2.Setting { return http2.Setting{ID: id, Val: v} }
	for _, tc := range []struct {
		name     string
		in, want []http2.Setting
	}{
		{"no repeats", []http2.Setting{s(http2.SettingInitialWindowSize, 5), s(http2.SettingEnablePush, 0)},
			[]http2.Setting{s(http2.SettingInitialWindowSize, 5), s(http2.SettingEnablePush, 0)}},
		{"the last value wins", []http2.Setting{s(http2.SettingInitialWindowSize, 5), s(http2.SettingEnablePush, 0), s(http2.SettingInitialWindowSize, 1)},
			[]http2.Setting{s(http2.SettingEnablePush, 0), s(http2.SettingInitialWindowSize, 1)}},
		{"an invalid value stays", []http2.Setting{s(http2.SettingEnablePush, 2), s(http2.SettingEnablePush, 0), s(http2.SettingEnablePush, 3)},
			[]http2.Setting{s(http2.SettingEnablePush, 2)}},
		{"unknown settings too", []http2.Setting{s(0x77, 1), s(0x77, 2)}, []http2.Setting{s(0x77, 2)}},
	} {
		if got, want := normalizeSettings(frame(tc.in...)), frame(tc.want...); !bytes.Equal(got, want) {
			t.Errorf("%s: got %x, want %x", tc.name, got, want)
		}
	}
}
