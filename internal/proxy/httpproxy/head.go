package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"golang.org/x/net/http/httpguts"
)

// errHeadTooLarge: the request head does not fit in MaxHeaderBytes.
var errHeadTooLarge = errors.New("request header too large")

// Requests refused for their framing or fields (RFC 9112 §3.2, §5.1, §6.1).
var (
	errSmuggling = errors.New("request has both Content-Length and Transfer-Encoding")
	errHTTP10TE  = errors.New("HTTP/1.0 request with Transfer-Encoding")
	errBadField  = errors.New("invalid header field")
	errBadHost   = errors.New("missing or invalid Host")
)

// peekHead makes br buffer one whole request head (through the blank line)
// without consuming it and returns it. Blank lines before the request line,
// which RFC 9112 §2.2 tells servers to ignore, are discarded. If br's buffer
// is smaller than the head, it returns a larger reader (twice as large each
// time, up to max) holding the same bytes. wait, if not nil, is called
// once, before the first read that waits for more bytes: a head already
// buffered, as nearly every request's is once its first byte is seen, is
// returned without it.
func peekHead(br *bufio.Reader, r io.Reader, max int, wait func()) ([]byte, *bufio.Reader, error) {
	for {
		buf, _ := br.Peek(br.Buffered())
		if blank := len(buf) - len(bytes.TrimLeft(buf, "\r\n")); blank > 0 {
			br.Discard(blank)
			continue
		}
		if end := headEnd(buf); end >= 0 {
			return buf[:end], br, nil
		}
		if len(buf) >= max {
			return nil, br, errHeadTooLarge
		}
		if len(buf) == br.Size() {
			// The head outgrew the buffer: move its bytes to a bigger one.
			held := append([]byte(nil), buf...)
			br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(held), r), min(2*br.Size(), max))
			continue
		}
		// Wait for at least one more byte.
		if wait != nil {
			wait()
			wait = nil
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, br, err
		}
	}
}

// headEnd returns the length of the head in buf including its terminating
// blank line, or -1 if it is not complete yet.
func headEnd(buf []byte) int {
	for i := 0; i < len(buf); i++ {
		if buf[i] != '\n' {
			continue
		}
		if i+1 < len(buf) && buf[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(buf) && buf[i+1] == '\r' && buf[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

// checkFraming refuses heads that frame the body two ways, or with a
// Transfer-Encoding HTTP/1.0 does not have (net/http ignores it there,
// which would leave the body to be read as the next request).
func checkFraming(head []byte) error {
	var cl, te bool
	requestLine, _, _ := bytes.Cut(head, []byte("\n"))
	http10 := bytes.HasSuffix(bytes.TrimRight(requestLine, "\r"), []byte("HTTP/1.0"))
	for len(head) > 0 {
		line := head
		if i := bytes.IndexByte(head, '\n'); i >= 0 {
			line, head = head[:i], head[i+1:]
		} else {
			head = nil
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) != len("Content-Length") && len(name) != len("Transfer-Encoding") {
			continue
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			cl = true
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			te = true
		}
	}
	switch {
	case cl && te:
		return errSmuggling
	case te && http10:
		return errHTTP10TE
	}
	return nil
}

// readRequest reads the request whose whole head br holds, with context
// ctx: by parseRequestHead, or by net/http's reader with the checks it
// lacks.
func readRequest(ctx context.Context, head []byte, br *bufio.Reader) (*http.Request, error) {
	r := parseRequestHead(ctx, head, br)
	if r == nil {
		if err := checkFraming(head); err != nil {
			return nil, err
		}
		var err error
		if r, err = http.ReadRequest(br); err != nil {
			return nil, err
		}
		r = r.WithContext(ctx)
		if err := validFields(r.Header); err != nil {
			return nil, err
		}
	}
	return r, checkHost(r)
}

// readResponse reads the response to req whose whole head br holds: by
// parseResponseHead, or by net/http's reader with the field check it
// lacks (a proxy must not relay invalid fields, RFC 9112 §5.1).
func readResponse(head []byte, br *bufio.Reader, req *http.Request) (*http.Response, error) {
	if resp := parseResponseHead(head, br, req); resp != nil {
		return resp, nil
	}
	resp, err := http.ReadResponse(br, req)
	if err == nil {
		err = validFields(resp.Header)
	}
	return resp, err
}

// checkHost refuses what net/http's own server refuses and ReadRequest
// lets through: an HTTP/1.1 request without a valid Host (RFC 9112 §3.2).
func checkHost(r *http.Request) error {
	if r.ProtoAtLeast(1, 1) && r.Method != http.MethodConnect && (r.Host == "" || !httpguts.ValidHostHeader(r.Host)) {
		return errBadHost
	}
	return nil
}

// validFields refuses what net/http's own server refuses and its readers
// let through: field names that are not tokens (whitespace before the
// colon, RFC 9112 §5.1) and values with control characters.
func validFields(h http.Header) error {
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("%w name %q", errBadField, k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("%w value in %s", errBadField, k)
			}
		}
	}
	return nil
}
