package httpproxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The HTTP/1 head parsers below read the heads nearly all traffic is
// made of — CRLF lines, origin-form targets, bodies framed by
// Content-Length or absent — from the bytes peekHead buffered, into the
// same http.Request and http.Response that http.ReadRequest and
// http.ReadResponse build, with one string allocation for all of a head's
// fields instead of one per field and no line-by-line reads. Anything else
// (chunked bodies, absolute-form targets, folded or bare-LF lines, repeated
// Content-Length, malformed input) makes them decline, and net/http's
// reader then parses the head and reports its errors. FuzzParseHead holds
// the two to the same result for every head the parsers accept.
//
// BenchmarkServeH1 justified them: net/http's readers were 45 % of the
// proxy's user-space time per HTTP/1 request.
//
// A field value shares its head's memory, and some outlive the request (an
// HTTP/2 connection's HPACK table keeps fields it indexed), so heads larger
// than maxFastHead go to net/http, which copies each value; and a request's
// method, target and Host, which metrics and decision logs keep, get memory
// of their own.
const maxFastHead = 4 << 10

// parseRequestHead parses the request whose head br holds, as
// http.ReadRequest would, with context ctx, and consumes the head from br;
// nil means it declined and left br as it was.
func parseRequestHead(ctx context.Context, head []byte, br *bufio.Reader) *http.Request {
	if len(head) > maxFastHead {
		return nil
	}
	line, fields, ok := cutLine(string(head))
	if !ok {
		return nil
	}
	method, rest, _ := strings.Cut(line, " ")
	target, proto, _ := strings.Cut(rest, " ")
	proto, major, minor, ok := parseVersion(proto)
	if !ok || !httpguts.ValidHeaderFieldName(method) || !strings.HasPrefix(target, "/") {
		return nil
	}
	h, ok := parseFields(fields)
	if !ok || h["Transfer-Encoding"] != nil || len(h["Host"]) > 1 {
		return nil
	}
	n, ok := contentLength(h)
	if !ok {
		return nil
	}
	// The target and Host in one string of their own.
	var host string
	if hs := h["Host"]; hs != nil {
		host = hs[0]
	}
	if host == "" {
		target = strings.Clone(target)
	} else {
		own := target + host
		target, host = own[:len(target)], own[len(target):]
	}
	u := requestURL(target)
	if u == nil {
		return nil
	}
	// Built in place and given its context by WithContext's one copy:
	// http.Request's context can be set no other way.
	r := (&http.Request{
		Method: knownMethod(method), URL: u, RequestURI: target,
		Proto: proto, ProtoMajor: major, ProtoMinor: minor,
		Header: h, Host: host,
		Close: shouldClose(major, minor, h),
	}).WithContext(ctx)
	delete(h, "Host")
	switch {
	case n > 0:
		r.ContentLength, r.Body = n, &fixedBody{r: br, n: n}
	default:
		r.Body = http.NoBody
	}
	br.Discard(len(head))
	return r
}

// parseResponseHead parses the response to req whose head br holds, as
// http.ReadResponse would, and consumes the head from br; nil means it
// declined and left br as it was. Interim responses and bodies delimited
// by the connection's end are left to net/http.
func parseResponseHead(head []byte, br *bufio.Reader, req *http.Request) *http.Response {
	if len(head) > maxFastHead {
		return nil
	}
	line, fields, ok := cutLine(string(head))
	if !ok {
		return nil
	}
	proto, status, _ := strings.Cut(line, " ")
	proto, major, minor, ok := parseVersion(proto)
	if !ok || len(status) < 3 || len(status) > 3 && status[3] != ' ' {
		return nil
	}
	code := 0
	for _, c := range []byte(status[:3]) {
		if c < '0' || c > '9' {
			return nil
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 {
		return nil
	}
	h, ok := parseFields(fields)
	if !ok || h["Transfer-Encoding"] != nil {
		return nil
	}
	n, ok := contentLength(h)
	if !ok {
		return nil
	}
	resp := &http.Response{
		Status: status, StatusCode: code,
		Proto: proto, ProtoMajor: major, ProtoMinor: minor,
		Header: h, Body: http.NoBody, ContentLength: n,
		Close: shouldClose(major, minor, h), Request: req,
	}
	if resp.Close && major == 1 && minor == 1 {
		delete(h, "Connection") // as net/http does: the close is in resp.Close
	}
	switch {
	case req.Method == http.MethodHead:
	case code == http.StatusNoContent || code == http.StatusNotModified:
		resp.ContentLength = 0
	case n < 0:
		return nil // the body ends with the connection
	case n > 0:
		resp.Body = &fixedBody{r: br, n: n}
	}
	br.Discard(len(head))
	return resp
}

// cutLine cuts s at its first LF, which must end a CRLF.
func cutLine(s string) (line, rest string, ok bool) {
	i := strings.IndexByte(s, '\n')
	if i < 1 || s[i-1] != '\r' {
		return "", "", false
	}
	return s[:i-1], s[i+1:], true
}

// trimBlanks trims the spaces and tabs around a field value.
func trimBlanks(v string) string {
	for v != "" && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for v != "" && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// requestURL is url.ParseRequestURI's result for an origin-form target:
// made directly for a plain path (letters, digits, "-._~/"), which it
// neither unescapes nor splits; nil if ParseRequestURI refuses it.
func requestURL(target string) *url.URL {
	for i := 0; i < len(target); i++ {
		if c := target[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
			u, err := url.ParseRequestURI(target)
			if err != nil {
				return nil
			}
			return u
		}
	}
	return &url.URL{Path: target}
}

// knownMethod is method as a constant when it is a standard one, else a
// copy.
func knownMethod(method string) string {
	for _, m := range [...]string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodOptions, http.MethodPatch, http.MethodConnect, http.MethodTrace} {
		if method == m {
			return m
		}
	}
	return strings.Clone(method)
}

// parseVersion accepts the two HTTP/1 versions (returned as constants).
func parseVersion(proto string) (_ string, major, minor int, ok bool) {
	switch proto {
	case "HTTP/1.1":
		return "HTTP/1.1", 1, 1, true
	case "HTTP/1.0":
		return "HTTP/1.0", 1, 0, true
	}
	return "", 0, 0, false
}

// parseFields parses the field lines of a head up to its blank line, each
// ending in CRLF, none folded. Names are canonicalised and values trimmed
// as net/textproto does; every value shares s's memory.
func parseFields(s string) (http.Header, bool) {
	lines := min(strings.Count(s, "\n")-1, 100) // a hint, bounded as net/textproto bounds it
	if lines < 0 {
		return nil, false
	}
	h := make(http.Header, lines)
	values := make([]string, lines)
	for {
		line, rest, ok := cutLine(s)
		if !ok {
			return nil, false
		}
		if line == "" {
			break
		}
		s = rest
		name, value, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return nil, false
		}
		value = trimBlanks(value)
		name = textproto.CanonicalMIMEHeaderKey(name)
		if vs := h[name]; vs != nil || len(values) == 0 {
			h[name] = append(vs, value)
			continue
		}
		values[0] = value
		h[name], values = values[:1:1], values[1:]
	}
	// RFC 9111 §5.4: Pragma: no-cache stands for Cache-Control: no-cache.
	if p := h["Pragma"]; len(p) > 0 && p[0] == "no-cache" && h["Cache-Control"] == nil {
		h["Cache-Control"] = []string{"no-cache"}
	}
	return h, true
}

// contentLength returns a message's one Content-Length, -1 without one;
// false for anything else (repeated or invalid: net/http decides).
func contentLength(h http.Header) (int64, bool) {
	switch cl := h["Content-Length"]; len(cl) {
	case 0:
		return -1, true
	case 1:
		n, err := strconv.ParseUint(cl[0], 10, 63)
		return int64(n), err == nil
	}
	return 0, false
}

// shouldClose reports a message after which the connection closes: an
// HTTP/1.1 one that says so, an HTTP/1.0 one unless it asks to keep alive.
func shouldClose(major, minor int, h http.Header) bool {
	c := h["Connection"]
	closing := httpguts.HeaderValuesContainsToken(c, "close")
	if major == 1 && minor == 0 {
		return closing || !httpguts.HeaderValuesContainsToken(c, "keep-alive")
	}
	return closing
}

// fixedBody is a body of n bytes read from r: a connection's reader, whose
// next message follows. The last bytes come with io.EOF; an end of the
// connection before them is io.ErrUnexpectedEOF.
type fixedBody struct {
	r *bufio.Reader
	n int64
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	switch {
	case b.n == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *fixedBody) Close() error { return nil }
