package destination

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// Retry budget defaults, as Linkerd's.
const (
	defaultBudgetRatio  = 0.2
	defaultBudgetMinRPS = 10
	defaultBudgetWindow = 10 * time.Second
)

// route is one HTTPRoute or GRPCRoute as the index keeps it: decoded once,
// when it arrives.
type route struct {
	res     store.Resource
	parents []parentRef
	ann     resources.Annotated
	http    *gwapiv1.HTTPRouteSpec // one of the two
	grpc    *gwapiv1.GRPCRouteSpec
}

type parentRef struct {
	service string // namespace/name
	port    int    // 0: every port
}

// newRoute decodes a stored route (validated when written).
func newRoute(r store.Resource) route {
	rt := route{res: r}
	rt.ann, _ = resources.RouteAnnotations(r.Metadata.Annotations)
	var refs []gwapiv1.ParentReference
	switch r.Kind {
	case resources.KindHTTPRoute:
		rt.http = &gwapiv1.HTTPRouteSpec{}
		if json.Unmarshal(r.Spec, rt.http) != nil {
			return route{res: r}
		}
		refs = rt.http.ParentRefs
	case resources.KindGRPCRoute:
		rt.grpc = &gwapiv1.GRPCRouteSpec{}
		if json.Unmarshal(r.Spec, rt.grpc) != nil {
			return route{res: r}
		}
		refs = rt.grpc.ParentRefs
	}
	rt.parents = parents(r.Metadata.Namespace, refs)
	return rt
}

// parents are the Services of namespace ns that refs attach to.
func parents(ns string, refs []gwapiv1.ParentReference) []parentRef {
	var out []parentRef
	for _, p := range refs {
		if p.Kind == nil || *p.Kind != "Service" {
			continue
		}
		ref := parentRef{service: ns + "/" + string(p.Name)}
		if p.Port != nil {
			ref.port = int(*p.Port)
		}
		out = append(out, ref)
	}
	return out
}

// compiled is one match, with what orders it and the rule it selects.
type compiled struct {
	match *destinationv1.RouteMatch
	rank  [5]int // Gateway API precedence, higher first
	order [3]string
}

// compileRoutes turns the routes attached to port of the service into the
// profile's matches (in precedence order) and rules.
func compileRoutes(port int, domain string, routes []route) ([]*destinationv1.RouteMatch, []*destinationv1.RouteRule) {
	var all []compiled
	var rules []*destinationv1.RouteRule
	for _, rt := range routes {
		ann := rt.ann
		created := rt.res.Metadata.CreationTimestamp.UTC().Format(time.RFC3339)
		routeName := rt.res.Metadata.Namespace + "/" + rt.res.Metadata.Name
		switch {
		case rt.http != nil:
			for i, r := range rt.http.Rules {
				rule := httpRule(r, rt.res.Metadata.Namespace, port, domain, ann)
				rule.Route, rule.Kind = routeName, resources.KindHTTPRoute
				idx := uint32(len(rules))
				rules = append(rules, rule)
				ms := r.Matches
				if len(ms) == 0 {
					ms = []gwapiv1.HTTPRouteMatch{{}}
				}
				for _, m := range ms {
					all = append(all, httpMatch(m, idx, [3]string{created, routeName, fmt.Sprintf("%06d", i)}))
				}
			}
		case rt.grpc != nil:
			for i, r := range rt.grpc.Rules {
				rule := grpcRule(r, rt.res.Metadata.Namespace, port, domain, ann)
				rule.Route, rule.Kind = routeName, resources.KindGRPCRoute
				idx := uint32(len(rules))
				rules = append(rules, rule)
				ms := r.Matches
				if len(ms) == 0 {
					ms = []gwapiv1.GRPCRouteMatch{{}}
				}
				for _, m := range ms {
					all = append(all, grpcMatch(m, idx, [3]string{created, routeName, fmt.Sprintf("%06d", i)}))
				}
			}
		}
	}
	// Precedence (Gateway API): exact path, then regular expression (ours),
	// then the longest prefix; then method; most headers; most query
	// parameters; then the oldest route, its name, the rule's order.
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		for k := range a.rank {
			if a.rank[k] != b.rank[k] {
				return a.rank[k] > b.rank[k]
			}
		}
		for k := range a.order {
			if a.order[k] != b.order[k] {
				return a.order[k] < b.order[k]
			}
		}
		return false
	})
	matches := make([]*destinationv1.RouteMatch, len(all))
	for i, c := range all {
		matches[i] = c.match
	}
	return matches, rules
}

// InboundRoutes compiles HTTPRoutes attached to a Server into the
// matches and rules the Server's inbound policy carries: rules name their
// route ("namespace/name"); they have no backends.
func InboundRoutes(routes []store.Resource) *destinationv1.Profile {
	var rts []route
	for _, r := range routes {
		rts = append(rts, newRoute(r))
	}
	matches, rules := compileRoutes(0, "", rts)
	return &destinationv1.Profile{Matches: matches, Rules: rules}
}

func attaches(rt route, service string, port int) bool {
	for _, p := range rt.parents {
		if p.service == service && (p.port == 0 || p.port == port) {
			return true
		}
	}
	return false
}

func rank(path *destinationv1.PathMatch, method string, headers, query int) [5]int {
	kind := map[destinationv1.PathMatch_Kind]int{destinationv1.PathMatch_EXACT: 3, destinationv1.PathMatch_REGEX: 2, destinationv1.PathMatch_PREFIX: 1}[path.Kind]
	m := 0
	if method != "" {
		m = 1
	}
	return [5]int{kind, len(path.Value), m, headers, query}
}

func httpMatch(m gwapiv1.HTTPRouteMatch, rule uint32, order [3]string) compiled {
	out := &destinationv1.RouteMatch{Rule: rule, Path: &destinationv1.PathMatch{Kind: destinationv1.PathMatch_PREFIX, Value: "/"}}
	if p := m.Path; p != nil {
		if p.Value != nil {
			out.Path.Value = *p.Value
		}
		if p.Type != nil {
			switch *p.Type {
			case gwapiv1.PathMatchExact:
				out.Path.Kind = destinationv1.PathMatch_EXACT
			case gwapiv1.PathMatchRegularExpression:
				out.Path.Kind = destinationv1.PathMatch_REGEX
			}
		}
	}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, &destinationv1.ValueMatch{Name: string(h.Name), Value: h.Value, Regex: h.Type != nil && *h.Type == gwapiv1.HeaderMatchRegularExpression})
	}
	for _, q := range m.QueryParams {
		out.QueryParams = append(out.QueryParams, &destinationv1.ValueMatch{Name: string(q.Name), Value: q.Value, Regex: q.Type != nil && *q.Type == gwapiv1.QueryParamMatchRegularExpression})
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	return compiled{match: out, rank: rank(out.Path, out.Method, len(out.Headers), len(out.QueryParams)), order: order}
}

// grpcMatch turns a gRPC method match into a path match on
// /package.Service/Method.
func grpcMatch(m gwapiv1.GRPCRouteMatch, rule uint32, order [3]string) compiled {
	out := &destinationv1.RouteMatch{Rule: rule, Method: http.MethodPost, Path: &destinationv1.PathMatch{Kind: destinationv1.PathMatch_PREFIX, Value: "/"}}
	if mm := m.Method; mm != nil {
		svc, method := "", ""
		if mm.Service != nil {
			svc = *mm.Service
		}
		if mm.Method != nil {
			method = *mm.Method
		}
		if mm.Type != nil && *mm.Type == gwapiv1.GRPCMethodMatchRegularExpression {
			out.Path = &destinationv1.PathMatch{Kind: destinationv1.PathMatch_REGEX, Value: "/(?:" + orAny(svc) + ")/(?:" + orAny(method) + ")"}
		} else {
			switch {
			case svc != "" && method != "":
				out.Path = &destinationv1.PathMatch{Kind: destinationv1.PathMatch_EXACT, Value: "/" + svc + "/" + method}
			case svc != "":
				out.Path = &destinationv1.PathMatch{Kind: destinationv1.PathMatch_PREFIX, Value: "/" + svc + "/"}
			default:
				out.Path = &destinationv1.PathMatch{Kind: destinationv1.PathMatch_REGEX, Value: "/[^/]+/" + regexp.QuoteMeta(method)}
			}
		}
	}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, &destinationv1.ValueMatch{Name: string(h.Name), Value: h.Value, Regex: h.Type != nil && *h.Type == gwapiv1.GRPCHeaderMatchRegularExpression})
	}
	// GRPCRoute precedence: most characters of service, then of method,
	// then most header matches (ranked after any HTTPRoute match).
	var svcLen, methodLen int
	if mm := m.Method; mm != nil {
		if mm.Service != nil {
			svcLen = len(*mm.Service)
		}
		if mm.Method != nil {
			methodLen = len(*mm.Method)
		}
	}
	return compiled{match: out, rank: [5]int{0, svcLen, methodLen, len(out.Headers), 0}, order: order}
}

func orAny(re string) string {
	if re == "" {
		return "[^/]+"
	}
	return re
}

func backends(refs []gwapiv1.BackendRef, ns string, port int, domain string) []*destinationv1.WeightedBackend {
	var out []*destinationv1.WeightedBackend
	for _, b := range refs {
		bns := ns
		if b.Namespace != nil {
			bns = string(*b.Namespace)
		}
		p := port
		if b.Port != nil {
			p = int(*b.Port)
		}
		w := uint32(1)
		if b.Weight != nil {
			w = uint32(*b.Weight)
		}
		out = append(out, &destinationv1.WeightedBackend{Authority: string(b.Name) + "." + bns + ".svc." + domain + ":" + strconv.Itoa(p), Weight: w})
	}
	return out
}

func headerModifier(f *gwapiv1.HTTPHeaderFilter) *destinationv1.HeaderModifier {
	if f == nil {
		return nil
	}
	m := &destinationv1.HeaderModifier{Remove: f.Remove}
	for _, h := range f.Set {
		m.Set = append(m.Set, &destinationv1.Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		m.Add = append(m.Add, &destinationv1.Header{Name: string(h.Name), Value: h.Value})
	}
	return m
}

func httpRule(r gwapiv1.HTTPRouteRule, ns string, port int, domain string, ann resources.Annotated) *destinationv1.RouteRule {
	refs := make([]gwapiv1.BackendRef, len(r.BackendRefs))
	for i, b := range r.BackendRefs {
		refs[i] = b.BackendRef
	}
	rule := newRule(r.Name, refs, r.Filters, ns, port, domain)
	if t := r.Timeouts; t != nil {
		rule.RequestTimeout = gatewayDuration(t.Request)
		rule.BackendTimeout = gatewayDuration(t.BackendRequest)
	}
	rule.Retry = retry(r.Retry, ann)
	annotated(rule, ann)
	return rule
}

func grpcRule(r gwapiv1.GRPCRouteRule, ns string, port int, domain string, ann resources.Annotated) *destinationv1.RouteRule {
	refs := make([]gwapiv1.BackendRef, len(r.BackendRefs))
	for i, b := range r.BackendRefs {
		refs[i] = b.BackendRef
	}
	// GRPCRoute's filters are a subset of HTTPRoute's, with the same names.
	filters := make([]gwapiv1.HTTPRouteFilter, len(r.Filters))
	for i, f := range r.Filters {
		filters[i] = gwapiv1.HTTPRouteFilter{Type: gwapiv1.HTTPRouteFilterType(f.Type), RequestHeaderModifier: f.RequestHeaderModifier,
			ResponseHeaderModifier: f.ResponseHeaderModifier, RequestMirror: f.RequestMirror}
	}
	rule := newRule(r.Name, refs, filters, ns, port, domain)
	rule.Retry = retry(nil, ann)
	annotated(rule, ann)
	return rule
}

// newRule is a rule's backends and filters.
func newRule(name *gwapiv1.SectionName, refs []gwapiv1.BackendRef, filters []gwapiv1.HTTPRouteFilter, ns string, port int, domain string) *destinationv1.RouteRule {
	rule := &destinationv1.RouteRule{Backends: backends(refs, ns, port, domain)}
	if name != nil {
		rule.Name = string(*name)
	}
	for _, f := range filters {
		switch f.Type {
		case gwapiv1.HTTPRouteFilterRequestHeaderModifier:
			rule.RequestHeaders = headerModifier(f.RequestHeaderModifier)
		case gwapiv1.HTTPRouteFilterResponseHeaderModifier:
			rule.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
		case gwapiv1.HTTPRouteFilterRequestRedirect:
			rule.Redirect = redirect(f.RequestRedirect)
		case gwapiv1.HTTPRouteFilterRequestMirror:
			rule.Mirror = mirror(f.RequestMirror, ns, port, domain)
		}
	}
	return rule
}

func mirror(m *gwapiv1.HTTPRequestMirrorFilter, ns string, port int, domain string) *destinationv1.Mirror {
	b := backends([]gwapiv1.BackendRef{{BackendObjectReference: m.BackendRef}}, ns, port, domain)[0]
	return &destinationv1.Mirror{Authority: b.Authority, Fraction: resources.MirrorFraction(m)}
}

// annotated adds what the route's annotations say to rule: timeouts,
// fault injection, hedging.
func annotated(rule *destinationv1.RouteRule, ann resources.Annotated) {
	if ann.AbortFraction > 0 || ann.DelayFraction > 0 {
		rule.Fault = &destinationv1.Fault{AbortStatus: uint32(ann.AbortStatus), AbortFraction: ann.AbortFraction, DelayFraction: ann.DelayFraction}
		if ann.Delay > 0 {
			rule.Fault.Delay = durationpb.New(ann.Delay)
		}
	}
	if ann.HedgeP95 || ann.HedgeDelay > 0 {
		rule.Hedge = &destinationv1.Hedge{P95: ann.HedgeP95}
		if ann.HedgeDelay > 0 {
			rule.Hedge.Delay = durationpb.New(ann.HedgeDelay)
		}
	}
	if ann.RequestTimeout > 0 {
		rule.RequestTimeout = durationpb.New(ann.RequestTimeout)
	}
	if ann.BackendTimeout > 0 {
		rule.BackendTimeout = durationpb.New(ann.BackendTimeout)
	}
}

func redirect(f *gwapiv1.HTTPRequestRedirectFilter) *destinationv1.Redirect {
	rd := &destinationv1.Redirect{StatusCode: 302}
	if f.Scheme != nil {
		rd.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		rd.Hostname = string(*f.Hostname)
	}
	if f.Port != nil {
		rd.Port = uint32(*f.Port)
	}
	if f.StatusCode != nil {
		rd.StatusCode = uint32(*f.StatusCode)
	}
	if p := f.Path; p != nil {
		if p.ReplaceFullPath != nil {
			rd.Path = *p.ReplaceFullPath
		}
		if p.ReplacePrefixMatch != nil {
			rd.Prefix = *p.ReplacePrefixMatch
		}
	}
	return rd
}

// retry combines a rule's native retry with the route's annotations;
// nil when neither asks for retries.
func retry(native *gwapiv1.HTTPRouteRetry, ann resources.Annotated) *destinationv1.Retry {
	if native == nil && !ann.RetriesSpecified {
		return nil
	}
	rt := &destinationv1.Retry{Attempts: 1, ServerErrors: ann.ServerErrors, GatewayErrors: ann.GatewayErrors,
		HttpCodes: ann.HTTPCodes, GrpcCodes: ann.GRPCCodes, FromHeaders: ann.FromHeaders}
	if native != nil {
		for _, c := range native.Codes {
			rt.HttpCodes = append(rt.HttpCodes, uint32(c))
		}
		if native.Attempts != nil {
			rt.Attempts = uint32(*native.Attempts)
		}
		if native.Backoff != nil {
			rt.Backoff = gatewayDuration(native.Backoff)
		}
	}
	if len(rt.HttpCodes) == 0 && !rt.ServerErrors && !rt.GatewayErrors && len(rt.GrpcCodes) == 0 {
		rt.ServerErrors = true // a retry with no codes retries 5xx
	}
	if ann.Limit >= 0 {
		rt.Attempts = uint32(ann.Limit)
	}
	if ann.PerTryTimeout > 0 {
		rt.PerTryTimeout = durationpb.New(ann.PerTryTimeout)
	}
	if ann.Backoff > 0 {
		rt.Backoff = durationpb.New(ann.Backoff)
	}
	b := &destinationv1.RetryBudget{Ratio: defaultBudgetRatio, MinPerSecond: defaultBudgetMinRPS, Ttl: durationpb.New(defaultBudgetWindow)}
	if ann.BudgetRatio >= 0 {
		b.Ratio = ann.BudgetRatio
	}
	if ann.BudgetMinRPS >= 0 {
		b.MinPerSecond = uint32(ann.BudgetMinRPS)
	}
	if ann.BudgetWindow > 0 {
		b.Ttl = durationpb.New(ann.BudgetWindow)
	}
	rt.Budget = b
	return rt
}

func gatewayDuration(d *gwapiv1.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	v, err := resources.ParseDuration(string(*d))
	if err != nil {
		return nil
	}
	return durationpb.New(v)
}
