package resources

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellis-mesh/trellis/internal/control/store"
)

// GatewayAPIVersion is the apiVersion of the Gateway API kinds.
const (
	GatewayGroup      = "gateway.networking.k8s.io"
	GatewayAPIVersion = GatewayGroup + "/v1"
)

// The route kinds: Gateway API, attached to a Service (GAMMA).
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
)

// Route annotations: what the Gateway API does not say (retries and
// timeouts of GRPCRoutes, retry budgets, which gRPC statuses retry).
const (
	AnnotationRetryHTTP        = "retry.trellis.dev/http"         // "5xx,gateway-error,429"
	AnnotationRetryGRPC        = "retry.trellis.dev/grpc"         // "unavailable,cancelled,deadline-exceeded,internal,resource-exhausted"
	AnnotationRetryLimit       = "retry.trellis.dev/limit"        // retries per request
	AnnotationRetryTimeout     = "retry.trellis.dev/timeout"      // per try
	AnnotationRetryBackoff     = "retry.trellis.dev/backoff"      // between tries
	AnnotationRetryFromHeaders = "retry.trellis.dev/from-headers" // "true": clients may set l5d-retry-* headers
	AnnotationBudgetRatio      = "retry.trellis.dev/budget-ratio" // "20%"
	AnnotationBudgetMinRPS     = "retry.trellis.dev/budget-min-per-second"
	AnnotationBudgetWindow     = "retry.trellis.dev/budget-window"
	AnnotationRequestTimeout   = "timeout.trellis.dev/request"
	AnnotationBackendTimeout   = "timeout.trellis.dev/backend-request"
	AnnotationFaultAbort       = "fault.trellis.dev/abort" // "503 10%": that status for that share
	AnnotationFaultDelay       = "fault.trellis.dev/delay" // "100ms 5%"
	AnnotationHedge            = "hedge.trellis.dev/delay" // "50ms", or "p95": the route's observed 95th percentile
)

// GRPCCodes are the gRPC status codes retry.trellis.dev/grpc may name.
var GRPCCodes = map[string]uint32{
	"cancelled": 1, "unknown": 2, "deadline-exceeded": 4, "resource-exhausted": 8,
	"aborted": 10, "internal": 13, "unavailable": 14, "data-loss": 15,
}

// gatewayDuration is the Gateway API duration format (GEP-2257).
var gatewayDuration = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// ParseDuration reads a Gateway API duration ("1h", "500ms", "1m30s").
func ParseDuration(s string) (time.Duration, error) {
	if !gatewayDuration.MatchString(s) {
		return 0, fmt.Errorf("%q is not a Gateway API duration (e.g. 500ms, 10s, 1m30s)", s)
	}
	return time.ParseDuration(s)
}

func checkHTTPRoute(r *store.Resource) error {
	var spec gwapiv1.HTTPRouteSpec
	if err := Decode(r.Spec, &spec); err != nil {
		return err
	}
	if err := checkParents(r, spec.ParentRefs); err != nil {
		return err
	}
	for i, rule := range spec.Rules {
		f := fmt.Sprintf("spec.rules[%d]", i)
		for j, m := range rule.Matches {
			if err := checkHTTPMatch(fmt.Sprintf("%s.matches[%d]", f, j), m); err != nil {
				return err
			}
		}
		for j, fl := range rule.Filters {
			if err := checkHTTPFilter(fmt.Sprintf("%s.filters[%d]", f, j), fl); err != nil {
				return err
			}
		}
		for j, b := range rule.BackendRefs {
			if err := checkBackend(fmt.Sprintf("%s.backendRefs[%d]", f, j), b.BackendRef); err != nil {
				return err
			}
		}
		if t := rule.Timeouts; t != nil {
			for name, d := range map[string]*gwapiv1.Duration{"request": t.Request, "backendRequest": t.BackendRequest} {
				if d == nil {
					continue
				}
				if _, err := ParseDuration(string(*d)); err != nil {
					return invalid(f+".timeouts."+name, err.Error())
				}
			}
		}
		if rt := rule.Retry; rt != nil {
			for j, c := range rt.Codes {
				if c < 400 || c > 599 {
					return invalid(fmt.Sprintf("%s.retry.codes[%d]", f, j), fmt.Sprintf("%d: must be between 400 and 599", c))
				}
			}
			if rt.Attempts != nil && (*rt.Attempts < 0 || *rt.Attempts > 10) {
				return invalid(f+".retry.attempts", fmt.Sprintf("%d: must be between 0 and 10", *rt.Attempts))
			}
			if rt.Backoff != nil {
				if _, err := ParseDuration(string(*rt.Backoff)); err != nil {
					return invalid(f+".retry.backoff", err.Error())
				}
			}
		}
	}
	return checkRouteAnnotations(r)
}

func checkGRPCRoute(r *store.Resource) error {
	var spec gwapiv1.GRPCRouteSpec
	if err := Decode(r.Spec, &spec); err != nil {
		return err
	}
	if err := checkParents(r, spec.ParentRefs); err != nil {
		return err
	}
	for i, rule := range spec.Rules {
		f := fmt.Sprintf("spec.rules[%d]", i)
		for j, m := range rule.Matches {
			mf := fmt.Sprintf("%s.matches[%d]", f, j)
			if mm := m.Method; mm != nil {
				regex := mm.Type != nil && *mm.Type == gwapiv1.GRPCMethodMatchRegularExpression
				if mm.Type != nil && !regex && *mm.Type != gwapiv1.GRPCMethodMatchExact {
					return invalid(mf+".method.type", fmt.Sprintf("%q: must be Exact or RegularExpression", *mm.Type))
				}
				if !regex && mm.Service == nil && mm.Method == nil {
					return invalid(mf+".method", "give service, method or both")
				}
				for name, v := range map[string]*string{"service": mm.Service, "method": mm.Method} {
					if v == nil {
						continue
					}
					if regex {
						if _, err := regexp.Compile(*v); err != nil {
							return invalid(mf+".method."+name, err.Error())
						}
					} else if *v == "" || strings.ContainsAny(*v, "/ ") {
						return invalid(mf+".method."+name, fmt.Sprintf("%q is not a gRPC %s name", *v, name))
					}
				}
			}
			for k, h := range m.Headers {
				regex := h.Type != nil && *h.Type == gwapiv1.GRPCHeaderMatchRegularExpression
				if err := checkValueMatch(fmt.Sprintf("%s.headers[%d]", mf, k), string(h.Name), h.Value, regex); err != nil {
					return err
				}
			}
		}
		for j, fl := range rule.Filters {
			ff := fmt.Sprintf("%s.filters[%d]", f, j)
			switch fl.Type {
			case gwapiv1.GRPCRouteFilterRequestHeaderModifier, gwapiv1.GRPCRouteFilterResponseHeaderModifier:
			case gwapiv1.GRPCRouteFilterRequestMirror:
				if err := checkMirror(ff+".requestMirror", fl.RequestMirror); err != nil {
					return err
				}
			default:
				return invalid(ff+".type", fmt.Sprintf("%q is not supported (RequestHeaderModifier, ResponseHeaderModifier, RequestMirror)", fl.Type))
			}
		}
		for j, b := range rule.BackendRefs {
			if err := checkBackend(fmt.Sprintf("%s.backendRefs[%d]", f, j), b.BackendRef); err != nil {
				return err
			}
		}
	}
	return checkRouteAnnotations(r)
}

// checkParents requires every parent to be a Service in the route's namespace.
func checkParents(r *store.Resource, parents []gwapiv1.ParentReference) error {
	if len(parents) == 0 {
		return invalid("spec.parentRefs", "at least one parent Service is required (GAMMA: the route applies to calls to that Service)")
	}
	for i, p := range parents {
		f := fmt.Sprintf("spec.parentRefs[%d]", i)
		server := p.Kind != nil && *p.Kind == KindServer && p.Group != nil && *p.Group == PolicyGroup
		service := p.Kind != nil && *p.Kind == "Service" && (p.Group == nil || *p.Group == "" || *p.Group == "core")
		if !server && !service {
			return invalid(f+".kind", "must be Service (group \"\" or core): routes attach to the service they route calls to; "+
				"or Server (group policy.trellis.dev): the route authorizes calls to it")
		}
		if p.Namespace != nil && string(*p.Namespace) != r.Metadata.Namespace {
			return invalid(f+".namespace", fmt.Sprintf("%q: a route attaches to Services of its own namespace %q", *p.Namespace, r.Metadata.Namespace))
		}
		if p.Name == "" {
			return invalid(f+".name", "required")
		}
	}
	return nil
}

func checkHTTPMatch(f string, m gwapiv1.HTTPRouteMatch) error {
	if p := m.Path; p != nil {
		typ := gwapiv1.PathMatchPathPrefix
		if p.Type != nil {
			typ = *p.Type
		}
		v := "/"
		if p.Value != nil {
			v = *p.Value
		}
		switch typ {
		case gwapiv1.PathMatchExact, gwapiv1.PathMatchPathPrefix:
			if !strings.HasPrefix(v, "/") {
				return invalid(f+".path.value", fmt.Sprintf("%q must start with /", v))
			}
		case gwapiv1.PathMatchRegularExpression:
			if _, err := regexp.Compile(v); err != nil {
				return invalid(f+".path.value", err.Error())
			}
		default:
			return invalid(f+".path.type", fmt.Sprintf("%q: must be Exact, PathPrefix or RegularExpression", typ))
		}
	}
	for i, h := range m.Headers {
		regex := h.Type != nil && *h.Type == gwapiv1.HeaderMatchRegularExpression
		if err := checkValueMatch(fmt.Sprintf("%s.headers[%d]", f, i), string(h.Name), h.Value, regex); err != nil {
			return err
		}
	}
	for i, q := range m.QueryParams {
		regex := q.Type != nil && *q.Type == gwapiv1.QueryParamMatchRegularExpression
		if err := checkValueMatch(fmt.Sprintf("%s.queryParams[%d]", f, i), string(q.Name), q.Value, regex); err != nil {
			return err
		}
	}
	if m.Method != nil {
		switch string(*m.Method) {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
			http.MethodConnect, http.MethodOptions, http.MethodTrace:
		default:
			return invalid(f+".method", fmt.Sprintf("%q is not an HTTP method", *m.Method))
		}
	}
	return nil
}

func checkValueMatch(f, name, value string, regex bool) error {
	if name == "" || strings.ContainsAny(name, " :\\t") {
		return invalid(f+".name", fmt.Sprintf("%q is not a header or parameter name", name))
	}
	if regex {
		if _, err := regexp.Compile(value); err != nil {
			return invalid(f+".value", err.Error())
		}
	}
	return nil
}

func checkHTTPFilter(f string, fl gwapiv1.HTTPRouteFilter) error {
	switch fl.Type {
	case gwapiv1.HTTPRouteFilterRequestHeaderModifier, gwapiv1.HTTPRouteFilterResponseHeaderModifier:
	case gwapiv1.HTTPRouteFilterRequestRedirect:
		rd := fl.RequestRedirect
		if rd == nil {
			return invalid(f+".requestRedirect", "required for type RequestRedirect")
		}
		if rd.StatusCode != nil && *rd.StatusCode != 301 && *rd.StatusCode != 302 {
			return invalid(f+".requestRedirect.statusCode", fmt.Sprintf("%d: must be 301 or 302", *rd.StatusCode))
		}
		if rd.Scheme != nil && *rd.Scheme != "http" && *rd.Scheme != "https" {
			return invalid(f+".requestRedirect.scheme", fmt.Sprintf("%q: must be http or https", *rd.Scheme))
		}
		if p := rd.Path; p != nil && p.Type != gwapiv1.FullPathHTTPPathModifier && p.Type != gwapiv1.PrefixMatchHTTPPathModifier {
			return invalid(f+".requestRedirect.path.type", fmt.Sprintf("%q: must be ReplaceFullPath or ReplacePrefixMatch", p.Type))
		}
	case gwapiv1.HTTPRouteFilterRequestMirror:
		return checkMirror(f+".requestMirror", fl.RequestMirror)
	default:
		return invalid(f+".type", fmt.Sprintf("%q is not supported (RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, RequestMirror)", fl.Type))
	}
	return nil
}

func checkMirror(f string, m *gwapiv1.HTTPRequestMirrorFilter) error {
	if m == nil {
		return invalid(f, "required for type RequestMirror")
	}
	if err := checkBackend(f+".backendRef", gwapiv1.BackendRef{BackendObjectReference: m.BackendRef}); err != nil {
		return err
	}
	if m.Percent != nil && (*m.Percent < 0 || *m.Percent > 100) {
		return invalid(f+".percent", fmt.Sprintf("%d: must be between 0 and 100", *m.Percent))
	}
	if fr := m.Fraction; fr != nil {
		if fr.Denominator != nil && (*fr.Denominator <= 0 || fr.Numerator > *fr.Denominator) || fr.Numerator < 0 {
			return invalid(f+".fraction", "numerator must be between 0 and the denominator (default 100)")
		}
	}
	return nil
}

// MirrorFraction is the share of requests a mirror filter copies.
func MirrorFraction(m *gwapiv1.HTTPRequestMirrorFilter) float64 {
	switch {
	case m.Fraction != nil:
		den := int32(100)
		if m.Fraction.Denominator != nil {
			den = *m.Fraction.Denominator
		}
		return float64(m.Fraction.Numerator) / float64(den)
	case m.Percent != nil:
		return float64(*m.Percent) / 100
	}
	return 1
}

func checkBackend(f string, b gwapiv1.BackendRef) error {
	if (b.Kind != nil && *b.Kind != "Service") || (b.Group != nil && *b.Group != "" && *b.Group != "core") {
		return invalid(f+".kind", "backends must be Services")
	}
	if b.Name == "" {
		return invalid(f+".name", "required")
	}
	if b.Weight != nil && (*b.Weight < 0 || *b.Weight > 1_000_000) {
		return invalid(f+".weight", fmt.Sprintf("%d: must be between 0 and 1000000", *b.Weight))
	}
	return nil
}

// checkRouteAnnotations parses every Trellis annotation of a route.
func checkRouteAnnotations(r *store.Resource) error {
	_, err := RouteAnnotations(r.Metadata.Annotations)
	return err
}

// Annotated is what a route's Trellis annotations say.
type Annotated struct {
	HTTPCodes        []uint32
	ServerErrors     bool
	GatewayErrors    bool
	GRPCCodes        []uint32
	Limit            int // -1: not set
	PerTryTimeout    time.Duration
	Backoff          time.Duration
	FromHeaders      bool
	BudgetRatio      float64 // -1: not set
	BudgetMinRPS     int     // -1: not set
	BudgetWindow     time.Duration
	RequestTimeout   time.Duration
	BackendTimeout   time.Duration
	RetriesSpecified bool
	AbortStatus      int
	AbortFraction    float64
	Delay            time.Duration
	DelayFraction    float64
	HedgeDelay       time.Duration
	HedgeP95         bool
}

// RouteAnnotations parses a route's Trellis annotations; errors name the annotation.
func RouteAnnotations(a map[string]string) (Annotated, error) {
	out := Annotated{Limit: -1, BudgetRatio: -1, BudgetMinRPS: -1}
	field := func(k string) string { return fmt.Sprintf("metadata.annotations[%q]", k) }
	for _, item := range splitList(a[AnnotationRetryHTTP]) {
		out.RetriesSpecified = true
		switch item {
		case "5xx":
			out.ServerErrors = true
		case "gateway-error":
			out.GatewayErrors = true
		default:
			n, err := strconv.Atoi(item)
			if err != nil || n < 400 || n > 599 {
				return out, invalid(field(AnnotationRetryHTTP), fmt.Sprintf("%q: want 5xx, gateway-error or a status between 400 and 599", item))
			}
			out.HTTPCodes = append(out.HTTPCodes, uint32(n))
		}
	}
	for _, item := range splitList(a[AnnotationRetryGRPC]) {
		out.RetriesSpecified = true
		c, ok := GRPCCodes[item]
		if !ok {
			return out, invalid(field(AnnotationRetryGRPC), fmt.Sprintf("%q is not a retryable gRPC status (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable, ...)", item))
		}
		out.GRPCCodes = append(out.GRPCCodes, c)
	}
	ints := []struct {
		key      string
		dst      *int
		min, max int
	}{{AnnotationRetryLimit, &out.Limit, 0, 10}, {AnnotationBudgetMinRPS, &out.BudgetMinRPS, 0, 100000}}
	for _, i := range ints {
		if v, ok := a[i.key]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < i.min || n > i.max {
				return out, invalid(field(i.key), fmt.Sprintf("%q: want a whole number between %d and %d", v, i.min, i.max))
			}
			*i.dst = n
		}
	}
	durations := []struct {
		key string
		dst *time.Duration
	}{{AnnotationRetryTimeout, &out.PerTryTimeout}, {AnnotationRetryBackoff, &out.Backoff}, {AnnotationBudgetWindow, &out.BudgetWindow},
		{AnnotationRequestTimeout, &out.RequestTimeout}, {AnnotationBackendTimeout, &out.BackendTimeout}}
	for _, d := range durations {
		if v, ok := a[d.key]; ok {
			dur, err := ParseDuration(v)
			if err != nil {
				return out, invalid(field(d.key), err.Error())
			}
			*d.dst = dur
		}
	}
	if v, ok := a[AnnotationBudgetRatio]; ok {
		p, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
		if err != nil || !strings.HasSuffix(v, "%") || p < 0 || p > 1000 {
			return out, invalid(field(AnnotationBudgetRatio), fmt.Sprintf("%q: want a percentage such as 20%%", v))
		}
		out.BudgetRatio = p / 100
	}
	if v, ok := a[AnnotationFaultAbort]; ok {
		st, frac, err := valueAndShare(v)
		code, cerr := strconv.Atoi(st)
		if err != nil || cerr != nil || code < 400 || code > 599 {
			return out, invalid(field(AnnotationFaultAbort), fmt.Sprintf("%q: want a status and a share, e.g. \"503 10%%\"", v))
		}
		out.AbortStatus, out.AbortFraction = code, frac
	}
	if v, ok := a[AnnotationFaultDelay]; ok {
		d, frac, err := valueAndShare(v)
		dur, derr := ParseDuration(d)
		if err != nil || derr != nil {
			return out, invalid(field(AnnotationFaultDelay), fmt.Sprintf("%q: want a duration and a share, e.g. \"100ms 5%%\"", v))
		}
		out.Delay, out.DelayFraction = dur, frac
	}
	if v, ok := a[AnnotationHedge]; ok {
		if v == "p95" {
			out.HedgeP95 = true
		} else {
			d, err := ParseDuration(v)
			if err != nil {
				return out, invalid(field(AnnotationHedge), fmt.Sprintf("%q: want a duration (e.g. 50ms) or p95", v))
			}
			out.HedgeDelay = d
		}
	}
	if v, ok := a[AnnotationRetryFromHeaders]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return out, invalid(field(AnnotationRetryFromHeaders), fmt.Sprintf("%q: want true or false", v))
		}
		out.FromHeaders = b
	}
	return out, nil
}

// valueAndShare reads "VALUE N%".
func valueAndShare(s string) (string, float64, error) {
	v, share, ok := strings.Cut(strings.TrimSpace(s), " ")
	share = strings.TrimSpace(share)
	if !ok || !strings.HasSuffix(share, "%") {
		return "", 0, fmt.Errorf("want VALUE N%%")
	}
	p, err := strconv.ParseFloat(strings.TrimSuffix(share, "%"), 64)
	if err != nil || p < 0 || p > 100 {
		return "", 0, fmt.Errorf("share %q", share)
	}
	return v, p / 100, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
