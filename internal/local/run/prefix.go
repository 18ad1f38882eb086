package run

import (
	"bytes"
	"io"
	"sync"
)

// prefixWriter writes each line to w with a prefix; a partial last line
// waits for its end.
type prefixWriter struct {
	mu      sync.Mutex
	w       io.Writer
	prefix  []byte
	partial []byte
}

func prefixed(w io.Writer, prefix string) io.Writer {
	return &prefixWriter{w: w, prefix: []byte(prefix)}
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.partial = append(p.partial, b...)
			if len(p.partial) > 64<<10 { // a line without end: flush it anyway
				i, b = len(p.partial), append(p.partial, '\n')
				p.partial = nil
			} else {
				break
			}
		}
		line := append(append(append([]byte{}, p.prefix...), p.partial...), b[:i+1]...)
		p.partial = p.partial[:0]
		if _, err := p.w.Write(line); err != nil {
			return n, err
		}
		b = b[i+1:]
	}
	return n, nil
}
