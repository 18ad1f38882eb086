package h2

import (
	"errors"
	"io"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headerReader reads a connection's frames as the Framer does with
// ReadMetaHeaders set — a HEADERS frame and its CONTINUATIONs come back as
// one *http2.MetaHeadersFrame of decoded fields, checked the same way
// (RFC 9113 §8.2, §8.3) — but decodes every block into the same frame and
// field slice, which the Framer allocates anew and grows field by field
// for each block: a block's frame and fields are valid until the next read.
// (BenchmarkHTTP1MeshTwoHops: the Framer's decoding was ~1 KB of garbage
// per request through two proxies.)
type headerReader struct {
	fr  *http2.Framer
	dec *hpack.Decoder
	mh  http2.MetaHeadersFrame

	// The block being decoded.
	sawRegular         bool
	invalid            error  // a field that makes the block malformed
	remain, trailerLen uint32 // what is left of the header list budget for fields, and for "trailer" values
}

func newHeaderReader(fr *http2.Framer) *headerReader {
	r := &headerReader{fr: fr, dec: hpack.NewDecoder(4096, nil)}
	r.dec.SetEmitFunc(r.emit)
	return r
}

// readFrame reads the next frame; a header block is returned whole. The
// previous frame's user is done with it.
func (r *headerReader) readFrame() (http2.Frame, error) {
	r.release()
	fh, err := r.fr.ReadFrameHeader()
	if err != nil {
		return nil, err
	}
	f, err := r.fr.ReadFrameForHeader(fh)
	var se http2.StreamError
	switch {
	case err == nil:
	case fh.Type != http2.FrameHeaders:
		return nil, err
	case errors.As(err, &se):
		// Its padding exceeds it: the block cannot be decoded, and a block
		// not decoded leaves the two sides' HPACK tables apart (RFC 9113
		// §4.3, §6.2).
		return nil, connError(http2.ErrCodeProtocol, "HEADERS frame padding exceeds its payload")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, connError(http2.ErrCodeFrameSize, "HEADERS frame too short") // RFC 9113 §4.2
	default:
		return nil, err
	}
	if hf, ok := f.(*http2.HeadersFrame); ok {
		return r.block(hf)
	}
	return f, nil
}

// release lets go of the last block's fields, which would otherwise keep
// their strings for as long as the connection lasts; an unusually long
// block's slice goes too.
func (r *headerReader) release() {
	clear(r.mh.Fields)
	r.mh = http2.MetaHeadersFrame{Fields: r.mh.Fields[:0]}
	if cap(r.mh.Fields) > 128 {
		r.mh.Fields = nil
	}
}

// listLimit is the header list size this side announced, as the Framer
// has it (16 MiB if unset).
func (r *headerReader) listLimit() uint32 {
	if r.fr.MaxHeaderListSize == 0 {
		return 16 << 20
	}
	return r.fr.MaxHeaderListSize
}

// block decodes the header block hf starts, reading its CONTINUATION
// frames (the Framer guarantees that nothing else comes between them).
func (r *headerReader) block(hf *http2.HeadersFrame) (http2.Frame, error) {
	r.mh.HeadersFrame = hf
	r.sawRegular, r.invalid = false, nil
	r.remain, r.trailerLen = r.listLimit(), r.listLimit()
	r.dec.SetEmitEnabled(true)
	r.dec.SetMaxStringLength(int(r.listLimit()))
	var frag interface {
		HeaderBlockFragment() []byte
		HeadersEnded() bool
	} = hf
	for {
		b := frag.HeaderBlockFragment()
		switch {
		case int64(len(b)) > 2*int64(r.remain+r.trailerLen):
			// Far beyond the budget: not worth decoding (as the Framer).
			return nil, connError(http2.ErrCodeProtocol, "header list too large")
		case r.invalid != nil:
			// More of a block already malformed: its size is no longer tracked.
			return nil, connError(http2.ErrCodeProtocol, "a header block goes on after an invalid field")
		}
		if _, err := r.dec.Write(b); err != nil {
			return nil, connError(http2.ErrCodeCompression, "a header block does not decode")
		}
		if frag.HeadersEnded() {
			break
		}
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		frag = f.(*http2.ContinuationFrame) // (the Framer checked the frame order)
	}
	if err := r.dec.Close(); err != nil {
		return nil, connError(http2.ErrCodeCompression, "a header block does not decode")
	}
	if r.invalid == nil {
		r.invalid = checkPseudos(r.mh.PseudoFields())
	}
	if r.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: r.invalid}
	}
	return &r.mh, nil
}

// emit takes one decoded field of the block.
func (r *headerReader) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		r.invalid = errors.New("invalid value of field " + hf.Name) // (the value may be a secret)
	}
	if hf.IsPseudo() {
		if r.sawRegular {
			r.invalid = errors.New("pseudo-header field after regular fields")
		}
	} else {
		r.sawRegular = true
		if !validWireName(hf.Name) {
			r.invalid = errors.New("invalid field name " + hf.Name)
		}
	}
	if r.invalid != nil {
		r.dec.SetEmitEnabled(false)
		return
	}
	budget, size := &r.remain, hf.Size()
	if hf.Name == "trailer" {
		// Each name it announces counts as a field (as the Framer counts).
		n := uint32(strings.Count(hf.Value, ",") + 1)
		budget, size = &r.trailerLen, uint32(len(hf.Value))-n+1+n*hpack.HeaderField{}.Size()
	}
	if size > *budget {
		r.dec.SetEmitEnabled(false)
		r.mh.Truncated = true
		r.remain, r.trailerLen = 0, 0
		return
	}
	*budget -= size
	r.mh.Fields = append(r.mh.Fields, hf)
}

// validWireName is a field name as HTTP/2 sends it: a token, in lower case
// (RFC 9113 §8.2.1).
func validWireName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if !httpguts.IsTokenRune(c) || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// checkPseudos checks a block's pseudo-header fields: known ones, each at
// most once, of a request or of a response, not both (RFC 9113 §8.3).
func checkPseudos(pseudo []hpack.HeaderField) error {
	var request, response bool
	for i, hf := range pseudo {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return errors.New("unknown pseudo-header field " + hf.Name)
		}
		for _, prev := range pseudo[:i] {
			if prev.Name == hf.Name {
				return errors.New("duplicate pseudo-header field " + hf.Name)
			}
		}
	}
	if request && response {
		return errors.New("pseudo-header fields of a request and of a response")
	}
	return nil
}
