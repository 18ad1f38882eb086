package detect

// Hello is what detection learns from a TLS ClientHello.
type Hello struct {
	SNI  string   // server_name (RFC 6066 §3)
	ALPN []string // application protocols offered (RFC 7301)
}

// ParseClientHello reads the server name and ALPN protocols from a TLS
// record holding a ClientHello (RFC 8446 §4.1.2). complete is false when b
// does not yet hold the whole first record; a malformed hello yields what
// could be read and true.
func ParseClientHello(b []byte) (hello Hello, complete bool) {
	if len(b) < 5 {
		return hello, false
	}
	recLen := int(b[3])<<8 | int(b[4])
	if len(b) < 5+recLen {
		return hello, false
	}
	r := reader(b[5 : 5+recLen])
	if t, ok := r.u8(); !ok || t != 1 { // handshake type client_hello
		return hello, true
	}
	body, ok := r.vec(3)
	if !ok {
		// The hello continues in a later record; we only look at the first.
		return hello, true
	}
	h := reader(body)
	if !h.skip(2 + 32) { // legacy_version, random
		return hello, true
	}
	for _, width := range []int{1, 2, 1} { // session id, cipher suites, compression
		if _, ok := h.vec(width); !ok {
			return hello, true
		}
	}
	exts, ok := h.vec(2)
	if !ok {
		return hello, true
	}
	e := reader(exts)
	for len(e) > 0 {
		typ, ok1 := e.u16()
		data, ok2 := e.vec(2)
		if !ok1 || !ok2 {
			return hello, true
		}
		switch typ {
		case 0: // server_name: a list of (type, name); host_name is type 0
			d := reader(data)
			list, _ := d.vec(2)
			for l := reader(list); len(l) > 0; {
				kind, ok1 := l.u8()
				host, ok2 := l.vec(2)
				if !ok1 || !ok2 {
					break
				}
				if kind == 0 && hello.SNI == "" {
					hello.SNI = string(host)
				}
			}
		case 16: // application_layer_protocol_negotiation: a list of names
			d := reader(data)
			list, _ := d.vec(2)
			for l := reader(list); len(l) > 0; {
				name, ok := l.vec(1)
				if !ok {
					break
				}
				hello.ALPN = append(hello.ALPN, string(name))
			}
		}
	}
	return hello, true
}

// reader is a cursor over TLS wire encoding.
type reader []byte

func (r *reader) u8() (byte, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (int, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := int((*r)[0])<<8 | int((*r)[1])
	*r = (*r)[2:]
	return v, true
}

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

// vec reads a vector with a big-endian length prefix of width bytes.
func (r *reader) vec(width int) ([]byte, bool) {
	if len(*r) < width {
		return nil, false
	}
	n := 0
	for i := 0; i < width; i++ {
		n = n<<8 | int((*r)[i])
	}
	if len(*r) < width+n {
		return nil, false
	}
	v := (*r)[width : width+n]
	*r = (*r)[width+n:]
	return v, true
}
