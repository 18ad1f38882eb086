package destination

import (
	"encoding/json"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

func routeRes(t *testing.T, kind, name string, created time.Time, annotations map[string]string, spec string) route {
	t.Helper()
	b, err := yaml.YAMLToJSON([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	r := store.Resource{Kind: kind, Spec: json.RawMessage(b), Metadata: store.Metadata{Name: name, Namespace: "default", CreationTimestamp: created, Annotations: annotations}}
	return newRoute(r)
}

// Matches come out in Gateway API precedence: exact path, then regex,
// then the longest prefix; then method, headers, query parameters; then
// the older route.
func TestCompileRoutesPrecedence(t *testing.T) {
	old, young := time.Unix(1000, 0), time.Unix(2000, 0)
	routes := []route{
		routeRes(t, "HTTPRoute", "young", young, nil, `
parentRefs: [{kind: Service, name: web}]
rules:
- name: young-prefix
  matches: [{path: {type: PathPrefix, value: /api}}]`),
		routeRes(t, "HTTPRoute", "old", old, map[string]string{"retry.trellis.dev/http": "5xx", "retry.trellis.dev/limit": "3"}, `
parentRefs: [{kind: Service, name: web, port: 8080}]
rules:
- name: old-prefix
  matches: [{path: {type: PathPrefix, value: /api}}]
- name: headers
  matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: a, value: "1"}, {name: b, value: "2"}]}]
- name: method
  matches: [{path: {type: PathPrefix, value: /api}, method: GET}]
- name: exact
  matches: [{path: {type: Exact, value: /api/v1}}]
- name: regex
  matches: [{path: {type: RegularExpression, value: "/api/.*"}}]
- name: longer
  matches: [{path: {type: PathPrefix, value: /api/v1}}]`),
		routeRes(t, "GRPCRoute", "grpc", old, nil, `
parentRefs: [{kind: Service, name: web}]
rules:
- name: grpc-method-only
  matches: [{method: {method: Get}}]
- name: grpc-service-only
  matches: [{method: {service: pkg.Svc}}]
- name: grpc
  matches: [{method: {service: pkg.Svc, method: Get}}]
  backendRefs: [{name: other, port: 9090, weight: 3}]`),
		routeRes(t, "HTTPRoute", "elsewhere", old, nil, `
parentRefs: [{kind: Service, name: web, port: 9999}]
rules:
- name: other-port`),
	}
	var attached []route
	for _, rt := range routes {
		if attaches(rt, "default/web", 8080) {
			attached = append(attached, rt)
		}
	}
	matches, rules := compileRoutes(8080, "cluster.local", attached)
	var got []string
	for _, m := range matches {
		got = append(got, rules[m.Rule].Name)
	}
	want := []string{"exact", "regex", "longer", "method", "headers", "old-prefix", "young-prefix", "grpc", "grpc-service-only", "grpc-method-only"}
	if len(got) != len(want) {
		t.Fatalf("order %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %v; want %v", got, want)
		}
	}
	var grpc, oldPrefix *destinationv1.RouteRule
	for i, m := range matches {
		switch rules[m.Rule].Name {
		case "grpc":
			grpc = rules[m.Rule]
			if p := matches[i].Path; p.Kind != destinationv1.PathMatch_EXACT || p.Value != "/pkg.Svc/Get" || matches[i].Method != "POST" {
				t.Errorf("gRPC method match compiled to %v %s", p, matches[i].Method)
			}
		case "old-prefix":
			oldPrefix = rules[m.Rule]
		}
	}
	if b := grpc.Backends; len(b) != 1 || b[0].Authority != "other.default.svc.cluster.local:9090" || b[0].Weight != 3 || grpc.Kind != "GRPCRoute" {
		t.Errorf("gRPC rule %v", grpc)
	}
	if r := oldPrefix.Retry; r == nil || r.Attempts != 3 || !r.ServerErrors || r.Budget.Ratio != 0.2 || r.Budget.MinPerSecond != 10 || oldPrefix.Route != "default/old" {
		t.Errorf("annotated retry %v on %v", r, oldPrefix)
	}
}
