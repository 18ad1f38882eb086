package accesslog

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// apacheTime is the timestamp layout of Apache's common log format.
const apacheTime = "02/Jan/2006:15:04:05 -0700"

// appendApache renders e as an Apache combined-like line.
func appendApache(b []byte, e *entry) []byte {
	b = appendAddr(b, e)
	b = append(b, ' ')
	b = appendApacheField(b, e.clientID, false)
	b = append(b, " - ["...)
	b = e.start.UTC().AppendFormat(b, apacheTime)
	b = append(b, "] \""...)
	b = appendApacheField(b, e.method, true)
	b = append(b, ' ')
	b = appendApacheField(b, e.uri, true)
	b = append(b, ' ')
	b = appendApacheField(b, e.version, true)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.responseBytes, 10)
	b = append(b, " \""...)
	b = appendApacheField(b, e.referer, true)
	b = append(b, "\" \""...)
	b = appendApacheField(b, e.userAgent, true)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, e.duration.Microseconds(), 10)
	b = append(b, ' ')
	b = appendApacheField(b, e.direction, false)
	return append(b, '\n')
}

func appendAddr(b []byte, e *entry) []byte {
	if !e.client.IsValid() {
		return append(b, '-')
	}
	return e.client.AppendTo(b)
}

// appendApacheField appends s, "-" if it is empty, escaping as Apache does:
// quotes and backslashes with a backslash, control and non-ASCII bytes as
// \xhh — and, outside quotes, spaces too, so every field stays one token.
func appendApacheField(b []byte, s string, quoted bool) []byte {
	if s == "" {
		return append(b, '-')
	}
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f || (c == ' ' && !quoted):
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendJSON renders e as one JSON object.
func appendJSON(b []byte, e *entry) []byte {
	b = append(b, `{"timestamp":"`...)
	b = e.start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","direction":`...)
	b = appendJSONString(b, e.direction)
	b = append(b, `,"client.addr":`...)
	if e.client.IsValid() {
		b = append(b, '"')
		b = e.client.AppendTo(b)
		b = append(b, '"')
	} else {
		b = append(b, `""`...)
	}
	b = append(b, `,"client.id":`...)
	b = appendJSONString(b, e.clientID)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, e.host)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, e.method)
	b = append(b, `,"uri":`...)
	b = appendJSONString(b, e.uri)
	b = append(b, `,"version":`...)
	b = appendJSONString(b, e.version)
	b = append(b, `,"user_agent":`...)
	b = appendJSONString(b, e.userAgent)
	b = append(b, `,"referer":`...)
	b = appendJSONString(b, e.referer)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"response_bytes":`...)
	b = strconv.AppendInt(b, e.responseBytes, 10)
	b = append(b, `,"total_ns":`...)
	b = strconv.AppendInt(b, e.duration.Nanoseconds(), 10)
	if e.traceID.IsValid() {
		b = append(b, `,"trace_id":"`...)
		b = append(b, e.traceID.String()...)
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes
// U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029': // valid JSON, but not in JavaScript strings
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
