package tap

import "strings"

// addDstLabels adds to labels the destination's metric labels as
// metrics.RenderDst renders them (k="v",k="v", values escaped). It stops at
// the first malformed pair: labels are informative, never worth failing for.
func addDstLabels(labels map[string]string, rendered string) {
	s := rendered
	for s != "" {
		eq := strings.Index(s, `="`)
		if eq <= 0 {
			return
		}
		k := s[:eq]
		s = s[eq+2:]
		var v strings.Builder
		closed := false
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c == '"' {
				s, closed = s[i+1:], true
				break
			}
			if c == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					v.WriteByte('\n')
				default:
					v.WriteByte(s[i])
				}
				continue
			}
			v.WriteByte(c)
		}
		if !closed {
			return
		}
		labels[k] = v.String()
		if s == "" {
			return
		}
		if s[0] != ',' {
			return
		}
		s = s[1:]
	}
}
