package resources

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/internal/control/store"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// PolicyAPIVersion is the group and version of the policy kinds, shaped as
// Linkerd's policy.linkerd.io kinds so that their manifests carry over.
const (
	PolicyGroup      = "policy.trellis.dev"
	PolicyAPIVersion = PolicyGroup + "/v1alpha1"
)

// The policy kinds: who may call a workload's port (Server,
// AuthorizationPolicy and the authentications it requires), how often
// (HTTPLocalRateLimitPolicy), and where traffic may leave the mesh
// (EgressNetwork).
const (
	KindServer                   = "Server"
	KindAuthorizationPolicy      = "AuthorizationPolicy"
	KindMeshTLSAuthentication    = "MeshTLSAuthentication"
	KindNetworkAuthentication    = "NetworkAuthentication"
	KindHTTPLocalRateLimitPolicy = "HTTPLocalRateLimitPolicy"
	KindEgressNetwork            = "EgressNetwork"
)

// ServerSpec selects a port of some workloads of its namespace, says how
// the proxy reads it and whether calls to it are refused or only counted
// when no policy allows them.
type ServerSpec struct {
	// PodSelector selects the workloads by their labels; empty selects
	// every workload of the namespace.
	PodSelector *metav1.LabelSelector `json:"podSelector"`
	// Port is a port number or a service port's name.
	Port intstr.IntOrString `json:"port"`
	// ProxyProtocol: unknown (detected, the default), HTTP/1, HTTP/2,
	// gRPC, opaque or TLS.
	ProxyProtocol string `json:"proxyProtocol,omitempty"`
	// AccessPolicy, when no AuthorizationPolicy allows a call: deny (the
	// default) or audit (let it through, count and log it).
	AccessPolicy string `json:"accessPolicy,omitempty"`
}

// Selects reports whether the Server selects a workload with these labels.
func (s ServerSpec) Selects(l map[string]string) bool {
	sel, err := metav1.LabelSelectorAsSelector(s.PodSelector)
	return err == nil && sel.Matches(labels.Set(l))
}

// The proxy protocols and access policies a Server may declare.
var (
	proxyProtocols = []string{"unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"}
	accessPolicies = []string{"deny", "audit"}
)

// PolicyRef names another object (Gateway API's policy target reference).
type PolicyRef struct {
	Group     string `json:"group,omitempty"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// AuthorizationPolicySpec allows calls to its target from clients that
// pass every one of the required authentications.
type AuthorizationPolicySpec struct {
	TargetRef                  PolicyRef   `json:"targetRef"`
	RequiredAuthenticationRefs []PolicyRef `json:"requiredAuthenticationRefs"`
}

// MeshTLSAuthentication passes clients with one of its identities: "*"
// (any meshed client), a SPIFFE ID, a SPIFFE ID pattern ending in "/*"
// (spiffe://cluster.local/ns/shop/sa/*), or a Linkerd-style name, exact or
// with a "*." prefix (*.shop.serviceaccount.identity.linkerd.cluster.local);
// or one of its ServiceAccount or Namespace references.
type MeshTLSAuthenticationSpec struct {
	Identities   []string    `json:"identities,omitempty"`
	IdentityRefs []PolicyRef `json:"identityRefs,omitempty"`
}

// Network is a CIDR less some of its subnets.
type Network struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// NetworkAuthenticationSpec passes clients from its networks.
type NetworkAuthenticationSpec struct {
	Networks []Network `json:"networks"`
}

// HTTPLocalRateLimitPolicySpec limits the requests a Server's proxy
// accepts: in total, per client identity, and per identity overrides. A
// policy whose target is a Service (beyond Linkerd) limits each caller at
// its own proxy instead: total is what each calling proxy may send a
// second, an override what the callers it names may; identity does not
// apply.
type HTTPLocalRateLimitPolicySpec struct {
	TargetRef PolicyRef           `json:"targetRef"`
	Total     *RateLimit          `json:"total,omitempty"`
	Identity  *RateLimit          `json:"identity,omitempty"`
	Overrides []RateLimitOverride `json:"overrides,omitempty"`
}

// RateLimit is a rate of requests.
type RateLimit struct {
	RequestsPerSecond int `json:"requestsPerSecond"`
}

// RateLimitOverride gives some clients a rate of their own.
type RateLimitOverride struct {
	RequestsPerSecond int         `json:"requestsPerSecond"`
	ClientRefs        []PolicyRef `json:"clientRefs"`
}

// EgressNetworkSpec says whether traffic leaving the mesh for its networks
// is allowed.
type EgressNetworkSpec struct {
	Networks      []Network `json:"networks,omitempty"`
	TrafficPolicy string    `json:"trafficPolicy"`
}

func checkServer(r *store.Resource) error {
	var s ServerSpec
	if err := Decode(r.Spec, &s); err != nil {
		return err
	}
	if err := checkSelector("spec.podSelector", s.PodSelector); err != nil {
		return err
	}
	switch s.Port.Type {
	case intstr.Int:
		if err := checkPort("spec.port", s.Port.IntValue()); err != nil {
			return err
		}
	case intstr.String:
		if errs := validation.IsValidPortName(s.Port.StrVal); len(errs) > 0 {
			return invalid("spec.port", fmt.Sprintf("%q: %s", s.Port.StrVal, strings.Join(errs, "; ")))
		}
	}
	if s.ProxyProtocol != "" && !slices.Contains(proxyProtocols, s.ProxyProtocol) {
		return invalid("spec.proxyProtocol", fmt.Sprintf("%q: must be one of %s", s.ProxyProtocol, strings.Join(proxyProtocols, ", ")))
	}
	if s.AccessPolicy != "" && !slices.Contains(accessPolicies, s.AccessPolicy) {
		return invalid("spec.accessPolicy", fmt.Sprintf("%q: must be deny or audit", s.AccessPolicy))
	}
	return nil
}

// checkSelector checks a label selector as Kubernetes would.
func checkSelector(f string, sel *metav1.LabelSelector) error {
	if sel == nil {
		return invalid(f, "required (an empty selector selects every workload of the namespace)")
	}
	if _, err := metav1.LabelSelectorAsSelector(sel); err != nil {
		return invalid(f, err.Error())
	}
	return nil
}

func checkAuthorizationPolicy(r *store.Resource) error {
	var s AuthorizationPolicySpec
	if err := Decode(r.Spec, &s); err != nil {
		return err
	}
	if err := checkRef("spec.targetRef", s.TargetRef, false, refKind{PolicyGroup, KindServer}, refKind{GatewayGroup, KindHTTPRoute},
		refKind{GatewayGroup, KindGRPCRoute}, refKind{"", "Namespace"}); err != nil {
		return err
	}
	if len(s.RequiredAuthenticationRefs) == 0 {
		return invalid("spec.requiredAuthenticationRefs", "at least one authentication is required")
	}
	for i, ref := range s.RequiredAuthenticationRefs {
		if err := checkRef(fmt.Sprintf("spec.requiredAuthenticationRefs[%d]", i), ref, true, refKind{PolicyGroup, KindMeshTLSAuthentication},
			refKind{PolicyGroup, KindNetworkAuthentication}, refKind{"", "ServiceAccount"}); err != nil {
			return err
		}
	}
	return nil
}

func checkMeshTLSAuthentication(r *store.Resource) error {
	var s MeshTLSAuthenticationSpec
	if err := Decode(r.Spec, &s); err != nil {
		return err
	}
	if len(s.Identities) == 0 && len(s.IdentityRefs) == 0 {
		return invalid("spec", "identities or identityRefs is required")
	}
	for i, id := range s.Identities {
		if err := checkIdentityPattern(id); err != nil {
			return invalid(fmt.Sprintf("spec.identities[%d]", i), fmt.Sprintf("%q: %v", id, err))
		}
	}
	for i, ref := range s.IdentityRefs {
		if err := checkRef(fmt.Sprintf("spec.identityRefs[%d]", i), ref, true, refKind{"", "ServiceAccount"}, refKind{"", "Namespace"}); err != nil {
			return err
		}
	}
	return nil
}

// checkIdentityPattern reports what makes id match no identity.
func checkIdentityPattern(id string) error {
	switch {
	case id == "*":
		return nil
	case strings.HasPrefix(id, "spiffe://"):
		if prefix, ok := strings.CutSuffix(id, "/*"); ok {
			// spiffe://TD/*, spiffe://TD/ns/NS/* or spiffe://TD/ns/NS/sa/*
			seg := strings.Split(strings.TrimPrefix(prefix, "spiffe://"), "/")
			ns := "x" // checked as a name in a valid ID
			switch {
			case len(seg) == 1:
			case len(seg) == 3 && seg[1] == "ns", len(seg) == 4 && seg[1] == "ns" && seg[3] == "sa":
				ns = seg[2]
			default:
				return fmt.Errorf("a SPIFFE pattern ends in /* after the trust domain, ns/NAMESPACE or ns/NAMESPACE/sa")
			}
			_, err := meshid.New(seg[0], ns, "x")
			return err
		}
		_, err := meshid.Parse(id)
		return err
	}
	name := strings.TrimPrefix(id, "*.")
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("neither *, a SPIFFE ID nor a DNS-style name: %s", strings.Join(errs, "; "))
	}
	return nil
}

func checkNetworkAuthentication(r *store.Resource) error {
	var s NetworkAuthenticationSpec
	if err := Decode(r.Spec, &s); err != nil {
		return err
	}
	if len(s.Networks) == 0 {
		return invalid("spec.networks", "at least one network is required")
	}
	return checkNetworks("spec.networks", s.Networks)
}

func checkNetworks(f string, nets []Network) error {
	for i, n := range nets {
		nf := fmt.Sprintf("%s[%d]", f, i)
		p, err := netip.ParsePrefix(n.CIDR)
		if err != nil {
			return invalid(nf+".cidr", fmt.Sprintf("%q is not a network such as 10.0.0.0/8", n.CIDR))
		}
		for j, e := range n.Except {
			q, err := netip.ParsePrefix(e)
			switch {
			case err != nil:
				return invalid(fmt.Sprintf("%s.except[%d]", nf, j), fmt.Sprintf("%q is not a network", e))
			case q.Bits() < p.Bits() || !p.Contains(q.Addr()):
				return invalid(fmt.Sprintf("%s.except[%d]", nf, j), fmt.Sprintf("%s is not inside %s", q, p))
			}
		}
	}
	return nil
}

func checkHTTPLocalRateLimitPolicy(r *store.Resource) error {
	var s HTTPLocalRateLimitPolicySpec
	if err := Decode(r.Spec, &s); err != nil {
		return err
	}
	if err := checkRef("spec.targetRef", s.TargetRef, false, refKind{PolicyGroup, KindServer}, refKind{"", KindService}); err != nil {
		return err
	}
	if s.TargetRef.Kind == KindService && s.Identity != nil {
		return invalid("spec.identity", "a limit on a Service applies at each caller's proxy to that caller alone: use total and overrides")
	}
	if s.Total == nil && s.Identity == nil && len(s.Overrides) == 0 {
		return invalid("spec", "total, identity or overrides is required")
	}
	for f, l := range map[string]*RateLimit{"spec.total": s.Total, "spec.identity": s.Identity} {
		if l != nil && l.RequestsPerSecond < 1 {
			return invalid(f+".requestsPerSecond", fmt.Sprintf("%d: must be at least 1", l.RequestsPerSecond))
		}
	}
	for i, o := range s.Overrides {
		of := fmt.Sprintf("spec.overrides[%d]", i)
		if o.RequestsPerSecond < 1 {
			return invalid(of+".requestsPerSecond", fmt.Sprintf("%d: must be at least 1", o.RequestsPerSecond))
		}
		if len(o.ClientRefs) == 0 {
			return invalid(of+".clientRefs", "at least one client is required")
		}
		for j, ref := range o.ClientRefs {
			if err := checkRef(fmt.Sprintf("%s.clientRefs[%d]", of, j), ref, true, refKind{"", "ServiceAccount"}); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkEgressNetwork(r *store.Resource) error {
	var s EgressNetworkSpec
	if err := Decode(r.Spec, &s); err != nil {
		return err
	}
	if s.TrafficPolicy != "Allow" && s.TrafficPolicy != "Deny" {
		return invalid("spec.trafficPolicy", fmt.Sprintf("%q: must be Allow or Deny", s.TrafficPolicy))
	}
	return checkNetworks("spec.networks", s.Networks)
}

// refKind is a group and kind a reference may name.
type refKind struct{ group, kind string }

// checkRef checks a reference against the kinds it may name; namespaced
// says whether it may name another namespace.
func checkRef(f string, ref PolicyRef, namespaced bool, allowed ...refKind) error {
	if !slices.Contains(allowed, refKind{ref.Group, ref.Kind}) {
		var names []string
		for _, a := range allowed {
			names = append(names, strings.TrimPrefix(a.group+"/"+a.kind, "/"))
		}
		return invalid(f, fmt.Sprintf("%s: must be %s", strings.TrimPrefix(ref.Group+"/"+ref.Kind, "/"), strings.Join(names, ", ")))
	}
	if errs := validation.IsDNS1123Subdomain(ref.Name); len(errs) > 0 {
		return invalid(f+".name", fmt.Sprintf("%q: %s", ref.Name, strings.Join(errs, "; ")))
	}
	if ref.Namespace != "" {
		if !namespaced {
			return invalid(f+".namespace", "a target is in the policy's own namespace")
		}
		if errs := validation.IsDNS1123Label(ref.Namespace); len(errs) > 0 {
			return invalid(f+".namespace", fmt.Sprintf("%q: %s", ref.Namespace, strings.Join(errs, "; ")))
		}
	}
	return nil
}

// Conflict refuses a Server for a port of workloads another Server of the
// namespace selects for the same port, and a second rate limit policy for
// a Server or a Service (store.ConflictChecker).
func (Kinds) Conflict(r store.Resource, others []store.Resource) error {
	switch r.Kind {
	case KindServer:
		var s ServerSpec
		if err := Decode(r.Spec, &s); err != nil {
			return err
		}
		for _, o := range others {
			var os ServerSpec
			if Decode(o.Spec, &os) == nil && os.Port == s.Port && selectorsMayOverlap(s.PodSelector, os.PodSelector) {
				return invalid("spec.podSelector", fmt.Sprintf("may select workloads that Server %q selects for port %s too: "+
					"Servers must not overlap (tell them apart with a label)", o.Metadata.Name, s.Port.String()))
			}
		}
	case KindHTTPLocalRateLimitPolicy:
		var s HTTPLocalRateLimitPolicySpec
		if err := Decode(r.Spec, &s); err != nil {
			return err
		}
		for _, o := range others {
			var os HTTPLocalRateLimitPolicySpec
			if Decode(o.Spec, &os) == nil && os.TargetRef.Kind == s.TargetRef.Kind && os.TargetRef.Name == s.TargetRef.Name {
				return invalid("spec.targetRef", fmt.Sprintf("%s %q has rate limit policy %q already: one per %s",
					s.TargetRef.Kind, s.TargetRef.Name, o.Metadata.Name, s.TargetRef.Kind))
			}
		}
	}
	return nil
}

// selectorsMayOverlap reports whether some set of labels could match both
// selectors: false only when a label tells them apart (values required by
// one that the other rules out, or present on one and absent on the
// other).
func selectorsMayOverlap(a, b *metav1.LabelSelector) bool {
	ra, errA := labelRules(a)
	rb, errB := labelRules(b)
	if errA != nil || errB != nil {
		return true
	}
	for key, x := range ra {
		if !x.and(rb[key]).satisfiable() {
			return false
		}
	}
	for key, y := range rb {
		if _, both := ra[key]; !both && !y.satisfiable() {
			return false
		}
	}
	return true
}

// labelRule is what selectors ask of one label.
type labelRule struct {
	exists, absent bool
	in             []string // non-nil: the value is one of these
	out            []string // values it must not have
}

// and is both rules at once.
func (x labelRule) and(y labelRule) labelRule {
	r := labelRule{exists: x.exists || y.exists, absent: x.absent || y.absent, out: append(slices.Clone(x.out), y.out...)}
	switch {
	case x.in == nil:
		r.in = y.in
	case y.in == nil:
		r.in = x.in
	default:
		r.in = slices.DeleteFunc(slices.Clone(x.in), func(v string) bool { return !slices.Contains(y.in, v) })
	}
	return r
}

// satisfiable reports whether some label (or its absence) passes the rule.
func (x labelRule) satisfiable() bool {
	switch {
	case x.absent:
		return !x.exists && x.in == nil
	case x.in != nil:
		return slices.ContainsFunc(x.in, func(v string) bool { return !slices.Contains(x.out, v) })
	}
	return true
}

// labelRules turns a selector into one rule per label it names.
func labelRules(sel *metav1.LabelSelector) (map[string]labelRule, error) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, err
	}
	reqs, _ := s.Requirements()
	rules := map[string]labelRule{}
	for _, r := range reqs {
		var rule labelRule
		switch r.Operator() {
		case selection.In, selection.Equals, selection.DoubleEquals:
			rule = labelRule{exists: true, in: append([]string{}, r.ValuesUnsorted()...)}
		case selection.NotIn, selection.NotEquals:
			rule.out = r.ValuesUnsorted()
		case selection.Exists:
			rule.exists = true
		case selection.DoesNotExist:
			rule.absent = true
		}
		rules[r.Key()] = rules[r.Key()].and(rule)
	}
	return rules, nil
}
