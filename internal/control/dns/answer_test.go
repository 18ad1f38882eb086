package dns

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// services is a fake Resolver: "name.namespace" → virtual IP.
type services map[string]netip.Addr

func (m services) ServiceIP(name, namespace string) (netip.Addr, bool) {
	ip, ok := m[name+"."+namespace]
	return ip, ok
}

var testServices = services{
	"emoji.default": netip.MustParseAddr("10.96.0.10"),
	"web.shop":      netip.MustParseAddr("::ffff:10.96.0.11"), // mapped: answered as A
	"v6.default":    netip.MustParseAddr("fd00::12"),
}

// query describes a query message; the zero value of each field means the
// usual: one IN question, opcode QUERY, no EDNS0.
type query struct {
	id       uint16
	opcode   dnsmessage.OpCode
	response bool
	rd       bool
	names    []string // one question per name
	typ      dnsmessage.Type
	class    dnsmessage.Class
	edns     int    // the OPT record's UDP size; 0: no OPT record
	ednsTTL  uint32 // the OPT record's TTL field (extended RCODE, version, flags)
}

func (q query) pack(t testing.TB) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{
		ID: q.id, OpCode: q.opcode, Response: q.response, RecursionDesired: q.rd,
	})
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	typ, class := q.typ, q.class
	if typ == 0 {
		typ = dnsmessage.TypeA
	}
	if class == 0 {
		class = dnsmessage.ClassINET
	}
	for _, n := range q.names {
		if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(n), Type: typ, Class: class}); err != nil {
			t.Fatal(err)
		}
	}
	if q.edns != 0 {
		if err := b.StartAdditionals(); err != nil {
			t.Fatal(err)
		}
		var h dnsmessage.ResourceHeader
		if err := h.SetEDNS0(q.edns, 0, false); err != nil {
			t.Fatal(err)
		}
		h.TTL |= q.ednsTTL
		if err := b.OPTResource(h, dnsmessage.OPTResource{}); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func testServer(t testing.TB) *Server {
	t.Helper()
	s, err := newServer(Config{Resolver: testServices, TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const emoji = "emoji.default.svc.cluster.local."

func TestAnswer(t *testing.T) {
	s := testServer(t)
	tests := []struct {
		name    string
		q       query
		maxSize int
		rcode   dnsmessage.RCode // with extended bits, if the reply has OPT
		aa      bool
		answer  string // the answer record: an address, "SOA", or "" for none
		soa     bool   // an SOA record in the authority section
		opt     bool   // an OPT record in the reply
		noQ     bool   // the question is not echoed
		tc      bool
	}{
		{name: "A", q: query{id: 1, names: []string{emoji}}, aa: true, answer: "10.96.0.10"},
		{name: "A mixed case", q: query{id: 2, names: []string{"EMOJI.Default.SVC.Cluster.LOCAL."}}, aa: true, answer: "10.96.0.10"},
		{name: "A mapped IPv4", q: query{id: 3, names: []string{"web.shop.svc.cluster.local."}}, aa: true, answer: "10.96.0.11"},
		{name: "ANY", q: query{id: 4, names: []string{emoji}, typ: dnsmessage.TypeALL}, aa: true, answer: "10.96.0.10"},
		{name: "AAAA NODATA", q: query{id: 5, names: []string{emoji}, typ: dnsmessage.TypeAAAA}, aa: true, soa: true},
		{name: "TXT NODATA", q: query{id: 6, names: []string{emoji}, typ: dnsmessage.TypeTXT}, aa: true, soa: true},
		{name: "AAAA IPv6 service", q: query{id: 7, names: []string{"v6.default.svc.cluster.local."}, typ: dnsmessage.TypeAAAA}, aa: true, answer: "fd00::12"},
		{name: "A IPv6 service NODATA", q: query{id: 8, names: []string{"v6.default.svc.cluster.local."}}, aa: true, soa: true},
		{name: "unknown service", q: query{id: 9, names: []string{"nope.default.svc.cluster.local."}}, rcode: dnsmessage.RCodeNameError, aa: true, soa: true},
		{name: "unknown namespace", q: query{id: 10, names: []string{"emoji.other.svc.cluster.local."}}, rcode: dnsmessage.RCodeNameError, aa: true, soa: true},
		{name: "zone apex svc", q: query{id: 11, names: []string{"svc.cluster.local."}}, rcode: dnsmessage.RCodeNameError, aa: true, soa: true},
		{name: "namespace only", q: query{id: 12, names: []string{"default.svc.cluster.local."}}, rcode: dnsmessage.RCodeNameError, aa: true, soa: true},
		{name: "too many labels", q: query{id: 13, names: []string{"a.emoji.default.svc.cluster.local."}}, rcode: dnsmessage.RCodeNameError, aa: true, soa: true},
		{name: "search list miss", q: query{id: 14, names: []string{"emoji.default.default.svc.cluster.local."}}, rcode: dnsmessage.RCodeNameError, aa: true, soa: true},
		{name: "domain, not svc", q: query{id: 15, names: []string{"emoji.cluster.local."}}, rcode: dnsmessage.RCodeNameError, aa: true, soa: true},
		{name: "domain apex SOA", q: query{id: 16, names: []string{"cluster.local."}, typ: dnsmessage.TypeSOA}, aa: true, answer: "SOA"},
		{name: "domain apex A", q: query{id: 17, names: []string{"Cluster.Local."}}, aa: true, soa: true},
		{name: "out of domain", q: query{id: 18, names: []string{"example.com."}}, rcode: dnsmessage.RCodeRefused},
		{name: "suffix but not a label", q: query{id: 19, names: []string{"emoji.default.svc.xcluster.local."}}, rcode: dnsmessage.RCodeRefused},
		{name: "root", q: query{id: 20, names: []string{"."}}, rcode: dnsmessage.RCodeRefused},
		{name: "class CHAOS", q: query{id: 21, names: []string{emoji}, class: dnsmessage.ClassCHAOS}, rcode: dnsmessage.RCodeRefused},
		{name: "two questions", q: query{id: 22, names: []string{emoji, emoji}}, rcode: dnsmessage.RCodeFormatError, noQ: true},
		{name: "no question", q: query{id: 23}, rcode: dnsmessage.RCodeFormatError, noQ: true},
		{name: "opcode STATUS", q: query{id: 24, opcode: 2, names: []string{emoji}}, rcode: dnsmessage.RCodeNotImplemented},
		{name: "opcode NOTIFY", q: query{id: 25, opcode: 4, names: []string{emoji}}, rcode: dnsmessage.RCodeNotImplemented},
		{name: "EDNS0", q: query{id: 26, names: []string{emoji}, edns: 4096}, aa: true, answer: "10.96.0.10", opt: true},
		{name: "EDNS0 tiny size", q: query{id: 27, names: []string{emoji}, edns: 100}, aa: true, answer: "10.96.0.10", opt: true},
		{name: "EDNS0 NXDOMAIN", q: query{id: 28, names: []string{"nope.default.svc.cluster.local."}, edns: 1232}, rcode: dnsmessage.RCodeNameError, aa: true, soa: true, opt: true},
		{name: "EDNS0 REFUSED", q: query{id: 29, names: []string{"example.com."}, edns: 1232}, rcode: dnsmessage.RCodeRefused, opt: true},
		{name: "EDNS version 1", q: query{id: 30, names: []string{emoji}, edns: 1232, ednsTTL: 1 << 16}, rcode: rcodeBadVers, opt: true},
		{name: "EDNS DO bit", q: query{id: 31, names: []string{emoji}, edns: 1232, ednsTTL: 1 << 15}, aa: true, answer: "10.96.0.10", opt: true},
		{name: "RD echoed", q: query{id: 32, rd: true, names: []string{emoji}}, aa: true, answer: "10.96.0.10"},
		{name: "TCP limit", q: query{id: 33, names: []string{emoji}}, maxSize: MaxTCPSize, aa: true, answer: "10.96.0.10"},
		{name: "truncated", q: query{id: 34, names: []string{emoji}}, maxSize: 60, aa: true, tc: true},
		{name: "truncated to the header", q: query{id: 35, names: []string{emoji}}, maxSize: 20, aa: true, tc: true, noQ: true},
		{name: "ID 0xffff", q: query{id: 0xffff, names: []string{emoji}}, aa: true, answer: "10.96.0.10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply := s.Answer(tt.q.pack(t), tt.maxSize)
			if reply == nil {
				t.Fatal("no reply")
			}
			var m dnsmessage.Message
			if err := m.Unpack(reply); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			h := m.Header
			if h.ID != tt.q.id || !h.Response || h.RecursionAvailable || h.OpCode != tt.q.opcode || h.RecursionDesired != tt.q.rd {
				t.Errorf("header %+v; want ID %d, QR, opcode %d, RD %v, no RA", h, tt.q.id, tt.q.opcode, tt.q.rd)
			}
			if h.Authoritative != tt.aa || h.Truncated != tt.tc {
				t.Errorf("AA %v TC %v; want %v %v", h.Authoritative, h.Truncated, tt.aa, tt.tc)
			}
			rcode := h.RCode
			var opt *dnsmessage.Resource
			for i, r := range m.Additionals {
				if r.Header.Type == dnsmessage.TypeOPT {
					opt = &m.Additionals[i]
					rcode = r.Header.ExtendedRCode(h.RCode)
				}
			}
			if rcode != tt.rcode {
				t.Errorf("rcode %v; want %v", rcode, tt.rcode)
			}
			if (opt != nil) != tt.opt || len(m.Additionals) > 1 {
				t.Errorf("additionals %v; want OPT: %v", m.Additionals, tt.opt)
			} else if opt != nil && opt.Header.Class != ednsSize {
				t.Errorf("OPT UDP size %d; want %d", opt.Header.Class, ednsSize)
			}
			if tt.noQ != (len(m.Questions) == 0) || len(m.Questions) > 1 {
				t.Errorf("questions %v", m.Questions)
			} else if len(m.Questions) == 1 && m.Questions[0].Name.String() != tt.q.names[0] {
				t.Errorf("question %v; want %s echoed", m.Questions[0], tt.q.names[0])
			}
			checkAnswer(t, m.Answers, tt.answer, tt.q)
			checkAuthority(t, m.Authorities, tt.soa)
		})
	}
}

func checkAnswer(t *testing.T, answers []dnsmessage.Resource, want string, q query) {
	t.Helper()
	if want == "" {
		if len(answers) != 0 {
			t.Errorf("answers %v; want none", answers)
		}
		return
	}
	if len(answers) != 1 {
		t.Fatalf("answers %v; want one %s", answers, want)
	}
	r := answers[0]
	var got string
	switch b := r.Body.(type) {
	case *dnsmessage.AResource:
		got = netip.AddrFrom4(b.A).String()
	case *dnsmessage.AAAAResource:
		got = netip.AddrFrom16(b.AAAA).String()
	case *dnsmessage.SOAResource:
		got = "SOA"
	}
	if got != want || r.Header.Name.String() != q.names[0] || r.Header.TTL != 30 || r.Header.Class != dnsmessage.ClassINET {
		t.Errorf("answer %v; want %s for %s with TTL 30", r, want, q.names[0])
	}
}

func checkAuthority(t *testing.T, auth []dnsmessage.Resource, soa bool) {
	t.Helper()
	if !soa {
		if len(auth) != 0 {
			t.Errorf("authority %v; want none", auth)
		}
		return
	}
	if len(auth) != 1 {
		t.Fatalf("authority %v; want one SOA", auth)
	}
	b, ok := auth[0].Body.(*dnsmessage.SOAResource)
	if !ok || auth[0].Header.Name.String() != "cluster.local." || auth[0].Header.TTL != 30 || b.MinTTL != 30 {
		t.Errorf("authority %v; want the SOA of cluster.local. with TTLs 30", auth[0])
	}
}

func TestAnswerDrops(t *testing.T) {
	s := testServer(t)
	for name, msg := range map[string][]byte{
		"empty":    nil,
		"short":    {0, 1, 0, 0, 0},
		"response": query{id: 7, response: true, names: []string{emoji}}.pack(t),
	} {
		if reply := s.Answer(msg, 0); reply != nil {
			t.Errorf("%s: reply %x; want none", name, reply)
		}
	}
}

func TestAnswerMalformed(t *testing.T) {
	s := testServer(t)
	valid := query{id: 0x1234, names: []string{emoji}, edns: 1232}.pack(t)
	twoOPT := query{id: 0x1234, names: []string{emoji}, edns: 1232}.pack(t)
	twoOPT = append(twoOPT, twoOPT[len(twoOPT)-11:]...) // the OPT record again
	binary.BigEndian.PutUint16(twoOPT[10:], 2)          // ARCOUNT
	for name, msg := range map[string][]byte{
		"truncated question": valid[:20],
		"truncated OPT":      valid[:len(valid)-3],
		"counts too high":    append([]byte{0x12, 0x34, 0, 0, 0, 1, 0, 5, 0, 0, 0, 0}, valid[12:]...),
		"two OPT records":    twoOPT,
	} {
		t.Run(name, func(t *testing.T) {
			reply := s.Answer(msg, 0)
			var m dnsmessage.Message
			if err := m.Unpack(reply); err != nil {
				t.Fatalf("reply %x does not parse: %v", reply, err)
			}
			if m.Header.ID != 0x1234 || m.Header.RCode != dnsmessage.RCodeFormatError || !m.Header.Response {
				t.Errorf("header %+v; want ID 0x1234, FORMERR", m.Header)
			}
		})
	}
}

func TestNewServerConfig(t *testing.T) {
	s, err := newServer(Config{Resolver: testServices, Domain: "Corp.Example."})
	if err != nil {
		t.Fatal(err)
	}
	if s.domain != "corp.example." || s.ttl != 5 || s.log == nil {
		t.Errorf("domain %q ttl %d; want corp.example. and the default 5", s.domain, s.ttl)
	}
	reply := s.Answer(query{id: 1, names: []string{"emoji.default.svc.corp.example."}}.pack(t), 0)
	var m dnsmessage.Message
	if err := m.Unpack(reply); err != nil || len(m.Answers) != 1 {
		t.Errorf("custom domain: %v %v", err, m.Answers)
	}
	for _, c := range []Config{
		{},
		{Resolver: testServices, Domain: "a..b"},
		{Resolver: testServices, Domain: string(make([]byte, 300))},
	} {
		if _, err := newServer(c); err == nil {
			t.Errorf("newServer(%+v) succeeded; want an error", c)
		}
	}
}

func FuzzAnswer(f *testing.F) {
	for _, q := range []query{
		{id: 1, names: []string{emoji}},
		{id: 2, names: []string{"nope.default.svc.cluster.local."}, typ: dnsmessage.TypeAAAA, edns: 1232},
		{id: 3, names: []string{"example.com."}, edns: 4096, ednsTTL: 1 << 16},
		{id: 4, names: []string{emoji, "cluster.local."}},
		{id: 5, opcode: 5, names: []string{emoji}},
		{id: 6, response: true},
	} {
		f.Add(q.pack(f))
	}
	f.Add([]byte{})
	f.Add([]byte{0xab, 0xcd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1}) // a pointer loop
	f.Add([]byte{0xab, 0xcd, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	s := testServer(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, maxSize := range []int{0, 30, MaxTCPSize} {
			reply := s.Answer(msg, maxSize)
			if reply == nil {
				continue
			}
			var m dnsmessage.Message
			if err := m.Unpack(reply); err != nil {
				t.Fatalf("reply %x does not parse: %v", reply, err)
			}
			if len(msg) < 2 || m.Header.ID != binary.BigEndian.Uint16(msg) || !m.Header.Response {
				t.Fatalf("reply header %+v does not answer %x", m.Header, msg)
			}
			limit := maxSize
			if limit == 0 {
				limit = MaxTCPSize // the client's EDNS0 size may be anything
			}
			if len(reply) > limit && len(reply) > 12 {
				t.Fatalf("reply of %d bytes over the limit %d", len(reply), limit)
			}
		}
	})
}
