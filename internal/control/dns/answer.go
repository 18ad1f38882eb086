package dns

import (
	"errors"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

const (
	// MaxTCPSize is the maxSize to pass to [Server.Answer] for a reply sent
	// over TCP: the most its 2-byte length prefix can describe.
	MaxTCPSize = 65535
	// minUDPSize is the UDP reply limit without EDNS0, and the floor of the
	// size an OPT record may advertise (RFC 6891 section 6.2.5).
	minUDPSize = 512
	// ednsSize is the UDP payload size this server advertises in its own
	// OPT records; 1232 bytes avoids IP fragmentation on common paths.
	ednsSize = 1232
	// rcodeBadVers is the extended RCODE for an unsupported EDNS version.
	rcodeBadVers dnsmessage.RCode = 16
)

// reply is what Answer decided; build turns it into a message.
type reply struct {
	hdr       dnsmessage.Header
	q         *dnsmessage.Question // echoed question, if the query had exactly one
	addr      netip.Addr           // the answer's address record, if valid
	soaAnswer bool                 // SOA record in the answer section
	soaAuth   bool                 // SOA record in the authority section
	edns      bool                 // the query had an OPT record; reply with one
	extRCode  dnsmessage.RCode     // RCODE with its extended bits, sent in the OPT record
	udpSize   int                  // the client's UDP payload size
}

// Answer builds the reply to one query message.
//
// maxSize is the largest reply the transport can carry: pass MaxTCPSize for
// TCP and 0 for UDP, where the limit is the client's: 512 bytes, or the UDP
// payload size its EDNS0 OPT record advertises (at least 512). A reply over
// the limit goes out without records and with TC set, so the client retries
// over TCP.
//
// Answer never panics, whatever the input. It returns nil, meaning drop the
// input, if the header does not parse or the message is itself a response
// (answering responses could start a loop between two servers).
func (s *Server) Answer(query []byte, maxSize int) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	r := &reply{hdr: dnsmessage.Header{
		ID:               h.ID,
		Response:         true,
		OpCode:           h.OpCode,
		RecursionDesired: h.RecursionDesired,
	}}
	qs, err := p.AllQuestions()
	if err == nil && len(qs) == 1 {
		r.q = &qs[0]
	}
	var opt dnsmessage.ResourceHeader
	if err == nil {
		opt, r.edns, err = findOPT(&p)
		r.udpSize = int(opt.Class)
	}
	switch {
	case err != nil:
		r.hdr.RCode = dnsmessage.RCodeFormatError
	case h.OpCode != 0: // only QUERY
		r.hdr.RCode = dnsmessage.RCodeNotImplemented
	case r.q == nil:
		r.hdr.RCode = dnsmessage.RCodeFormatError
	case r.edns && opt.TTL>>16&0xff != 0: // EDNS version
		r.extRCode = rcodeBadVers
	default:
		s.resolve(r)
	}
	if r.extRCode == 0 {
		r.extRCode = r.hdr.RCode
	}
	r.hdr.RCode = r.extRCode & 0xf // the rest goes in the OPT record
	return s.limit(r, maxSize)
}

// findOPT returns the query's EDNS0 OPT record, if it has one. p must be at
// the answer section.
func findOPT(p *dnsmessage.Parser) (opt dnsmessage.ResourceHeader, found bool, err error) {
	if err := p.SkipAllAnswers(); err != nil {
		return opt, false, err
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return opt, false, err
	}
	for {
		h, err := p.AdditionalHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return opt, found, nil
		}
		if err != nil {
			return opt, false, err
		}
		if h.Type == dnsmessage.TypeOPT {
			if found {
				return opt, false, errors.New("more than one OPT record")
			}
			opt, found = h, true
		}
		if err := p.SkipAdditional(); err != nil {
			return opt, false, err
		}
	}
}

// resolve fills in the answer to the single question r.q.
func (s *Server) resolve(r *reply) {
	q := r.q
	rel, ok := strings.CutSuffix(lowerASCII(q.Name.String()), s.domain)
	inDomain := ok && (rel == "" || strings.HasSuffix(rel, "."))
	if !inDomain || (q.Class != dnsmessage.ClassINET && q.Class != dnsmessage.ClassANY) {
		r.hdr.RCode = dnsmessage.RCodeRefused
		return
	}
	r.hdr.Authoritative = true
	if rel == "" { // the apex, <domain>.: it has only its SOA record
		r.soaAnswer = q.Type == dnsmessage.TypeSOA || q.Type == dnsmessage.TypeALL
		r.soaAuth = !r.soaAnswer
		return
	}
	// rel is "<service>.<namespace>.svc." for a service name.
	var ip netip.Addr
	found := false
	if rest, ok := strings.CutSuffix(rel, ".svc."); ok {
		svc, ns, ok := strings.Cut(rest, ".")
		if ok && svc != "" && ns != "" && !strings.Contains(ns, ".") {
			ip, found = s.res.ServiceIP(svc, ns)
		}
	}
	if !found {
		r.hdr.RCode = dnsmessage.RCodeNameError
		r.soaAuth = true
		return
	}
	ip = ip.Unmap()
	all := q.Type == dnsmessage.TypeALL
	if ip.Is4() && (all || q.Type == dnsmessage.TypeA) || ip.Is6() && (all || q.Type == dnsmessage.TypeAAAA) {
		r.addr = ip
		return
	}
	r.soaAuth = true // the name exists, but has no record of this type
}

// limit builds r, dropping its records and setting TC if the message is
// over the transport's limit (see Answer for maxSize).
func (s *Server) limit(r *reply, maxSize int) []byte {
	if maxSize <= 0 {
		maxSize = max(minUDPSize, r.udpSize)
	}
	msg, err := s.build(r, true)
	if err == nil && len(msg) <= maxSize {
		return msg
	}
	if err != nil {
		s.log.Warn("dns reply failed to build", "err", err)
		r.hdr.RCode, r.extRCode = dnsmessage.RCodeServerFailure, dnsmessage.RCodeServerFailure
	} else {
		r.hdr.Truncated = true
	}
	if msg, err = s.build(r, false); err == nil && len(msg) <= maxSize {
		return msg
	}
	// The bare header always builds; it is all a tiny limit leaves room for.
	r.hdr.Truncated = true
	b := dnsmessage.NewBuilder(nil, r.hdr)
	msg, _ = b.Finish()
	return msg
}

// build packs r into a message, with its answer and authority records only
// if records is set.
func (s *Server) build(r *reply, records bool) ([]byte, error) {
	var first error
	do := func(err error) {
		if first == nil {
			first = err
		}
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, minUDPSize), r.hdr)
	b.EnableCompression()
	do(b.StartQuestions())
	if r.q != nil {
		do(b.Question(*r.q))
	}
	if records {
		do(b.StartAnswers())
		if r.addr.Is4() {
			do(b.AResource(s.header(r.q.Name), dnsmessage.AResource{A: r.addr.As4()}))
		} else if r.addr.Is6() {
			do(b.AAAAResource(s.header(r.q.Name), dnsmessage.AAAAResource{AAAA: r.addr.As16()}))
		}
		if r.soaAnswer {
			do(b.SOAResource(s.header(s.apex), s.soa))
		}
		do(b.StartAuthorities())
		if r.soaAuth {
			do(b.SOAResource(s.header(s.apex), s.soa))
		}
	}
	do(b.StartAdditionals())
	if r.edns {
		var opt dnsmessage.ResourceHeader
		do(opt.SetEDNS0(ednsSize, r.extRCode, false))
		do(b.OPTResource(opt, dnsmessage.OPTResource{}))
	}
	msg, err := b.Finish()
	do(err)
	return msg, first
}

// header is the header of a record for name with the answer TTL.
func (s *Server) header(name dnsmessage.Name) dnsmessage.ResourceHeader {
	return dnsmessage.ResourceHeader{Name: name, Class: dnsmessage.ClassINET, TTL: s.ttl}
}

// lowerASCII lowers the ASCII letters of s; DNS names compare
// case-insensitively in ASCII only (RFC 4343).
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
