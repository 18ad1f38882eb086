package httpproxy

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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

// The reader passes every frame through, but SETTINGS frames with one
// value per setting and header blocks with their malformed fields
// upper-cased, and reports every frame, however the connection's bytes
// arrive and however net/http's server reads them: a real framer and HPACK
// decoder read the output as the server would.
func FuzzClientReader(f *testing.F) {
	f.Add(uint8(1), uint8(7), uint8(9))
	f.Add(uint8(9), uint8(1), uint8(255))
	f.Add(uint8(200), uint8(3), uint8(1))
	f.Fuzz(func(t *testing.T, first, rest, readSize uint8) {
		var in bytes.Buffer
		in.WriteString(http2.ClientPreface)
		fr := http2.NewFramer(&in, nil)
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		block := func(fields ...string) []byte {
			hb.Reset()
			for i := 0; i < len(fields); i += 2 {
				enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
			}
			return bytes.Clone(hb.Bytes())
		}
		fr.WriteSettings()
		b1 := block(":method", "POST", ":path", "/a", ":scheme", "http", ":authority", "x", "te", "trailers", "x-long", strings.Repeat("v", 100))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b1[:7]})
		fr.WriteContinuation(1, false, b1[7:20])
		fr.WriteContinuation(1, true, b1[20:])
		fr.WriteData(1, false, bytes.Repeat([]byte("x"), 300))
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 7},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		fr.WriteRSTStream(1, http2.ErrCodeCancel)
		fr.WriteSettingsAck()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, EndHeaders: true, EndStream: true, PadLength: 5,
			Priority: http2.PriorityParam{StreamDep: 1, Weight: 9}, BlockFragment: block(":method", "GET", ":path", "/b", ":scheme", "http", "connection", "keep-alive")})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, EndHeaders: true, EndStream: true,
			BlockFragment: block(":method", "GET", ":path", "/c", ":scheme", "http", "connection", "keep-alive", "x-long", strings.Repeat("v", 100))})
		fr.WritePing(false, [8]byte{})
		want := []string{"SETTINGS 0 []", "HEADERS 1 [:method=POST :path=/a :scheme=http :authority=x te=trailers x-long=" + strings.Repeat("v", 100) + "]",
			"DATA 1 300", "SETTINGS 0 [MAX_CONCURRENT_STREAMS=7 INITIAL_WINDOW_SIZE=1]", "RST_STREAM 1", "SETTINGS 0 ack",
			`stream error: stream ID 3; PROTOCOL_ERROR; invalid header field name "CONNECTION"`,
			`stream error: stream ID 5; PROTOCOL_ERROR; invalid header field name "CONNECTION"`, "PING 0"}
		wantFrames := []uint32{0x4_0, 0x1_1, 0x9_1, 0x9_1, 0x0_1, 0x4_0, 0x3_1, 0x4_0, 0x1_3, 0x1_5, 0x6_0}

		var got []uint32
		r := newClientReader(&chunkReader{src: in.Bytes(), sizes: []int{max(int(first), 1), max(int(rest), 1)}},
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
		if !bytes.HasPrefix(out.Bytes(), []byte(http2.ClientPreface)) {
			t.Fatalf("no preface: %q", out.Bytes())
		}
		sr := http2.NewFramer(nil, bytes.NewReader(out.Bytes()[len(http2.ClientPreface):]))
		sr.ReadMetaHeaders = hpack.NewDecoder(decoderTableSize, nil)
		var seen []string
		for {
			fr, err := sr.ReadFrame()
			if err == io.EOF {
				break
			}
			switch fr := fr.(type) {
			case nil:
				seen = append(seen, err.Error())
			case *http2.MetaHeadersFrame:
				var fields []string
				for _, hf := range fr.Fields {
					fields = append(fields, hf.Name+"="+hf.Value)
				}
				seen = append(seen, fmt.Sprintf("HEADERS %d %v", fr.StreamID, fields))
			case *http2.SettingsFrame:
				if fr.IsAck() {
					seen = append(seen, "SETTINGS 0 ack")
					break
				}
				var s []string
				fr.ForeachSetting(func(st http2.Setting) error { s = append(s, fmt.Sprintf("%v=%d", st.ID, st.Val)); return nil })
				seen = append(seen, fmt.Sprintf("SETTINGS 0 %v", s))
			case *http2.DataFrame:
				seen = append(seen, fmt.Sprintf("DATA %d %d", fr.StreamID, len(fr.Data())))
			default:
				seen = append(seen, fmt.Sprintf("%s %d", fr.Header().Type, fr.Header().StreamID))
			}
		}
		if strings.Join(seen, "\n") != strings.Join(want, "\n") {
			t.Fatalf("the server would read:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
		}
		if fmt.Sprint(got) != fmt.Sprint(wantFrames) {
			t.Fatalf("frames %x, want %x", got, wantFrames)
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

// A header-block frame the reader cannot follow (here on stream 0) ends
// its checks: later blocks pass as they are, since the HPACK state is no
// longer known.
func TestClientReaderGivesUpOnUnfollowedBlocks(t *testing.T) {
	var in bytes.Buffer
	in.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&in, nil)
	var hb bytes.Buffer
	hpack.NewEncoder(&hb).WriteField(hpack.HeaderField{Name: "connection", Value: "close"})
	fr.WriteRawFrame(http2.FrameHeaders, 0x4, 0, hb.Bytes())
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true, BlockFragment: hb.Bytes()})
	out, err := io.ReadAll(newClientReader(bytes.NewReader(in.Bytes()), func(byte, uint32) {}))
	if err != nil || !bytes.Equal(out, in.Bytes()) {
		t.Fatalf("output %x, %v; want the input unchanged", out, err)
	}
}
