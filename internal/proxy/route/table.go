// Package route is the proxy's route stage: the routing table of a service
// (compiled from the Gateway API HTTPRoutes and GRPCRoutes the control
// plane serves in its profile), matching a request to a rule, the weighted
// choice of a backend, header modifiers, redirects, and the rule's
// timeouts, retry policy and retry budget.
package route

import (
	"math/rand/v2"
	"net/http"
	urlpath "path"
	"regexp"
	"strings"
	"time"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
)

// Table is a service's compiled routes, immutable.
type Table struct {
	matches []match
}

// Rule is what a matched request gets.
type Rule struct {
	// Route is the route's "namespace/name", Kind HTTPRoute or GRPCRoute,
	// Name the rule's section name.
	Route, Kind, Name string
	backends          []backend
	totalWeight       uint64
	RequestHeaders    *HeaderModifier
	ResponseHeaders   *HeaderModifier
	Redirect          *destinationv1.Redirect
	// RequestTimeout bounds the whole request; BackendTimeout each attempt.
	RequestTimeout, BackendTimeout time.Duration
	// Retry is nil when the rule does not retry.
	Retry *Policy
	// Mirror, Fault and Hedge are nil when the rule has none.
	Mirror *destinationv1.Mirror
	Fault  *Fault
	Hedge  *Hedge
	// HedgeBudget bounds the hedges of a rule that has no retry policy
	// (whose budget they share otherwise): Linkerd's defaults.
	HedgeBudget *Budget
}

// Fault is fault injection: a share of requests aborted, a share delayed.
type Fault struct {
	AbortStatus   int
	AbortFraction float64
	Delay         time.Duration
	DelayFraction float64
}

// Abort reports whether this request is to be aborted.
func (f *Fault) Abort() bool { return f.AbortFraction > 0 && rand.Float64() < f.AbortFraction }

// Delayed returns how long to hold this request (0 for most).
func (f *Fault) Delayed() time.Duration {
	if f.DelayFraction > 0 && rand.Float64() < f.DelayFraction {
		return f.Delay
	}
	return 0
}

// Mirrored reports whether this request is copied to the rule's mirror.
func (r *Rule) Mirrored() bool {
	return r.Mirror != nil && r.Mirror.Authority != "" && rand.Float64() < r.Mirror.Fraction
}

type backend struct {
	authority string
	weight    uint64
}

type match struct {
	rule    *Rule
	kind    destinationv1.PathMatch_Kind
	path    string
	re      *regexp.Regexp
	headers []valueMatch
	query   []valueMatch
	method  string
}

type valueMatch struct {
	name  string
	value string
	re    *regexp.Regexp
}

func (v valueMatch) matches(got string, present bool) bool {
	if !present {
		return false
	}
	if v.re != nil {
		return v.re.MatchString(got)
	}
	return got == v.value
}

// Compile builds the table of a profile. Matches whose regular expression
// does not compile (the control plane validated them) are left out.
func Compile(p *destinationv1.Profile, now func() time.Time) *Table {
	if p == nil || len(p.Matches) == 0 {
		return nil
	}
	rules := make([]*Rule, len(p.Rules))
	for i, r := range p.Rules {
		rules[i] = compileRule(r, now)
	}
	t := &Table{}
	for _, m := range p.Matches {
		if int(m.Rule) >= len(rules) || m.Path == nil {
			continue
		}
		cm := match{rule: rules[m.Rule], kind: m.Path.Kind, path: m.Path.Value, method: m.Method}
		ok := true
		if m.Path.Kind == destinationv1.PathMatch_REGEX {
			cm.re, ok = full(m.Path.Value)
		}
		for _, list := range []struct {
			in  []*destinationv1.ValueMatch
			out *[]valueMatch
		}{{m.Headers, &cm.headers}, {m.QueryParams, &cm.query}} {
			for _, v := range list.in {
				vm := valueMatch{name: v.Name, value: v.Value}
				if v.Regex {
					var good bool
					if vm.re, good = full(v.Value); !good {
						ok = false
					}
				}
				*list.out = append(*list.out, vm)
			}
		}
		if ok {
			t.matches = append(t.matches, cm)
		}
	}
	return t
}

// full compiles re to match whole values.
func full(re string) (*regexp.Regexp, bool) {
	c, err := regexp.Compile("^(?:" + re + ")$")
	return c, err == nil
}

func compileRule(r *destinationv1.RouteRule, now func() time.Time) *Rule {
	rule := &Rule{Route: r.Route, Kind: r.Kind, Name: r.Name, Redirect: r.Redirect,
		RequestHeaders: modifier(r.RequestHeaders), ResponseHeaders: modifier(r.ResponseHeaders),
		RequestTimeout: r.RequestTimeout.AsDuration(), BackendTimeout: r.BackendTimeout.AsDuration()}
	for _, b := range r.Backends {
		rule.backends = append(rule.backends, backend{authority: b.Authority, weight: uint64(b.Weight)})
		rule.totalWeight += uint64(b.Weight)
	}
	if r.Retry != nil {
		rule.Retry = newPolicy(r.Retry, now)
	}
	rule.Mirror = r.Mirror
	if f := r.Fault; f != nil {
		rule.Fault = &Fault{AbortStatus: int(f.AbortStatus), AbortFraction: f.AbortFraction, Delay: f.Delay.AsDuration(), DelayFraction: f.DelayFraction}
	}
	if h := r.Hedge; h != nil {
		rule.Hedge = &Hedge{delay: h.Delay.AsDuration(), p95: h.P95}
		if rule.Retry == nil || rule.Retry.Budget == nil {
			rule.HedgeBudget = NewBudget(0.2, 10, 10*time.Second, now)
		}
	}
	return rule
}

// Match returns the rule of the first match the request satisfies, or
// nil, and the path prefix it matched ("" unless a prefix match).
func (t *Table) Match(r *http.Request) (*Rule, string) {
	var query map[string][]string
	for i := range t.matches {
		m := &t.matches[i]
		if m.method != "" && r.Method != m.method {
			continue
		}
		if !m.pathMatches(r.URL.Path) {
			continue
		}
		ok := true
		for _, h := range m.headers {
			vs := r.Header.Values(h.name)
			if !h.matches(first(vs), len(vs) > 0) {
				ok = false
				break
			}
		}
		for _, q := range m.query {
			if !ok {
				break
			}
			if query == nil {
				query = r.URL.Query()
			}
			vs := query[q.name]
			ok = q.matches(first(vs), len(vs) > 0)
		}
		if ok {
			if m.kind == destinationv1.PathMatch_PREFIX {
				return m.rule, m.path
			}
			return m.rule, ""
		}
	}
	return nil, ""
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// pathMatches applies the Gateway API path semantics: a prefix matches
// whole path elements ("/foo" matches "/foo" and "/foo/bar", not "/foobar").
func (m *match) pathMatches(p string) bool {
	if p == "" {
		p = "/"
	}
	switch m.kind {
	case destinationv1.PathMatch_EXACT:
		return p == m.path
	case destinationv1.PathMatch_REGEX:
		return m.re.MatchString(p)
	}
	prefix := strings.TrimSuffix(m.path, "/")
	return prefix == "" || p == prefix || strings.HasPrefix(p, prefix+"/")
}

// Backend picks the backend service of one request by weight: its
// authority, or "" for the route's own service (no backends listed). ok
// is false when every weight is 0: the request must fail (Gateway API: 500).
func (r *Rule) Backend() (authority string, ok bool) {
	if len(r.backends) == 0 {
		return "", true
	}
	if r.totalWeight == 0 {
		return "", false
	}
	n := rand.Uint64N(r.totalWeight)
	for _, b := range r.backends {
		if n < b.weight {
			return b.authority, true
		}
		n -= b.weight
	}
	return r.backends[len(r.backends)-1].authority, true
}

// HeaderModifier sets, adds and removes headers.
type HeaderModifier struct {
	set, add []*destinationv1.Header
	remove   []string
}

func modifier(m *destinationv1.HeaderModifier) *HeaderModifier {
	if m == nil {
		return nil
	}
	return &HeaderModifier{set: m.Set, add: m.Add, remove: m.Remove}
}

// Apply modifies h.
func (m *HeaderModifier) Apply(h http.Header) {
	if m == nil {
		return
	}
	for _, s := range m.set {
		h.Set(s.Name, s.Value)
	}
	for _, a := range m.add {
		h.Add(a.Name, a.Value)
	}
	for _, name := range m.remove {
		h.Del(name)
	}
}

// CleanPath is p as a server that normalizes paths serves it: dot segments
// removed and repeated slashes merged (RFC 3986 §5.2.4), a trailing slash
// kept; a backslash taken for a slash and a dot segment with parameters
// ("..;x", which Java servers read as "..") for the dot segment, as some
// servers do. Authorization matches routes on it, so that /public/../admin
// is judged as the /admin the application may well serve. p itself when
// it is clean already (no allocation) or not a path ("*").
func CleanPath(p string) string {
	if !strings.HasPrefix(p, "/") || !strings.Contains(p, "//") && !strings.Contains(p, "/.") && !strings.Contains(p, "\\") {
		return p
	}
	p = strings.ReplaceAll(p, "\\", "/")
	if strings.Contains(p, ";") {
		segs := strings.Split(p, "/")
		for i, s := range segs {
			if dots, _, ok := strings.Cut(s, ";"); ok && (dots == "." || dots == "..") {
				segs[i] = dots
			}
		}
		p = strings.Join(segs, "/")
	}
	c := urlpath.Clean(p)
	if c != "/" && (strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")) {
		c += "/"
	}
	return c
}
