package httpproxy

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

func TestStaticNames(t *testing.T) {
	if len(staticNames) != 61 || staticNames[staticTransferEncoding-1] != "transfer-encoding" || staticNames[60] != "www-authenticate" {
		t.Fatalf("static table: %d names, 57th %q", len(staticNames), staticNames[staticTransferEncoding-1])
	}
}

// Blocks a real HPACK encoder wrote, through the guard, decode with a real
// decoder to the same fields but the malformed ones, whose names are in
// upper case — across many blocks sharing one dynamic table, with
// evictions and table size changes.
func FuzzFieldGuard(f *testing.F) {
	f.Add(uint64(1), uint8(20))
	f.Add(uint64(7), uint8(200))
	f.Add(uint64(42), uint8(3))
	f.Fuzz(func(t *testing.T, seed uint64, blocks uint8) {
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		names := []string{"connection", "te", "upgrade", "transfer-encoding", "keep-alive", "proxy-connection",
			"x-a", "x-bee", "accept", "content-type", "user-agent", ":path", "cookie"}
		values := []string{"", "trailers", "keep-alive", "gzip", "trailers, deflate", "a", strings.Repeat("v", 300), "chunked"}
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		dec := hpack.NewDecoder(decoderTableSize, nil)
		guard := newFieldGuard()
		for range int(blocks) {
			buf.Reset()
			if rng.IntN(8) == 0 {
				enc.SetMaxDynamicTableSize(uint32(rng.IntN(decoderTableSize + 1)))
			}
			var want []hpack.HeaderField
			for range 1 + rng.IntN(12) {
				hf := hpack.HeaderField{Name: names[rng.IntN(len(names))], Value: values[rng.IntN(len(values))], Sensitive: rng.IntN(5) == 0}
				enc.WriteField(hf)
				if malformed(hf.Name, hf.Value) {
					hf.Name = strings.ToUpper(hf.Name)
				}
				want = append(want, hf)
			}
			if rng.IntN(6) == 0 { // the static "transfer-encoding: " by index
				buf.WriteByte(0x80 | staticTransferEncoding)
				want = append(want, hpack.HeaderField{Name: "TRANSFER-ENCODING"})
			}
			block, _, err := guard.rewrite(bytes.Clone(buf.Bytes()))
			if err != nil {
				t.Fatalf("rewrite: %v", err)
			}
			got, err := dec.DecodeFull(block)
			if err != nil {
				t.Fatalf("decoding the rewritten block: %v", err)
			}
			for i := range want {
				want[i].Sensitive = false
			}
			for i := range got {
				got[i].Sensitive = false
			}
			if len(got) != len(want) {
				t.Fatalf("fields %v; want %v", got, want)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("field %d: %v, want %v", i, got[i], want[i])
				}
			}
		}
	})
}

func TestFieldGuardRefusesBrokenBlocks(t *testing.T) {
	for _, block := range [][]byte{{0x80}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x40, 0x05, 'a'}, {0x3f, 0xff, 0x7f}, {0xbf}} {
		if _, _, err := newFieldGuard().rewrite(block); err == nil {
			t.Errorf("%x: no error", block)
		}
	}
}
