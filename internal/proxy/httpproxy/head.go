package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// errHeadTooLarge: the request head does not fit in MaxHeaderBytes.
var errHeadTooLarge = errors.New("request header too large")

// errSmuggling: a request carries both Content-Length and Transfer-Encoding.
var errSmuggling = errors.New("request has both Content-Length and Transfer-Encoding")

// peekHead makes br buffer one whole request head (through the blank line)
// without consuming it and returns it. Blank lines before the request line,
// which RFC 9112 §2.2 tells servers to ignore, are discarded. If br's buffer
// is smaller than the head, it returns a larger reader holding the same bytes.
func peekHead(br *bufio.Reader, r io.Reader, max int) ([]byte, *bufio.Reader, error) {
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
			br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(held), r), max)
			continue
		}
		// Wait for at least one more byte.
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

// checkFraming refuses heads that frame the body two ways.
func checkFraming(head []byte) error {
	var cl, te bool
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
	if cl && te {
		return errSmuggling
	}
	return nil
}
