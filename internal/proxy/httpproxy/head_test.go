package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestPeekHead(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		head     string
		err      error
	}{
		{"crlf", "GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 1024, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", nil},
		{"bare lf", "GET / HTTP/1.1\nHost: a\n\nrest", 1024, "GET / HTTP/1.1\nHost: a\n\n", nil},
		{"leading blank lines", "\r\n\r\nGET / HTTP/1.1\r\n\r\n", 1024, "GET / HTTP/1.1\r\n\r\n", nil},
		{"grows past the buffer", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 5000) + "\r\n\r\n", 8192, "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 5000) + "\r\n\r\n", nil},
		{"too large", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 5000), 2048, "", errHeadTooLarge},
		{"truncated", "GET / HTTP/1.1\r\nHost", 1024, "", io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := strings.NewReader(tt.in)
			head, _, err := peekHead(bufio.NewReaderSize(r, 4096), r, tt.max, nil)
			if !errors.Is(err, tt.err) || string(head) != tt.head {
				t.Fatalf("got %q, %v; want %q, %v", head, err, tt.head, tt.err)
			}
		})
	}
}

func TestCheckFraming(t *testing.T) {
	for _, tt := range []struct {
		head string
		bad  bool
	}{
		{"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", false},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n", true},
		{"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\nContent-Length: 0\r\n\r\n", true},
		{"GET /?Content-Length:1 HTTP/1.1\r\nX-Transfer-Encoding: chunked\r\n\r\n", false},
	} {
		if err := checkFraming([]byte(tt.head)); (err != nil) != tt.bad {
			t.Errorf("checkFraming(%q) = %v; want bad=%v", tt.head, err, tt.bad)
		}
	}
}

func FuzzPeekHead(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 4096)
	f.Add([]byte("\n\n\r\nPOST / HTTP/1.0\nA: b\n\n"), 64)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 16 || max > 1<<16 {
			return
		}
		r := bytes.NewReader(in)
		head, _, err := peekHead(bufio.NewReaderSize(r, 16), r, max, nil)
		if err != nil {
			return
		}
		if len(head) > max {
			t.Fatalf("head of %d bytes exceeds max %d", len(head), max)
		}
		if !bytes.HasSuffix(head, []byte("\n\n")) && !bytes.HasSuffix(head, []byte("\n\r\n")) {
			t.Fatalf("head %q does not end with a blank line", head)
		}
		if !bytes.Contains(in, head) {
			t.Fatalf("head %q is not from the input", head)
		}
		checkFraming(head)
	})
}
