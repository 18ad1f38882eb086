package resources

import (
	"encoding/json"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/control/store"
)

// policyObject is a policy kind's object with spec given in YAML.
func policyObject(t *testing.T, kind, name, spec string) store.Resource {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	return store.Resource{APIVersion: PolicyAPIVersion, Kind: kind, Metadata: store.Metadata{Namespace: "shop", Name: name}, Spec: json.RawMessage(js)}
}

// Linkerd's own examples, with the group changed, are valid.
func TestPolicyKindsAcceptLinkerdShapes(t *testing.T) {
	for _, tc := range []struct{ kind, spec string }{
		{KindServer, "podSelector: {matchLabels: {app: emoji}}\nport: grpc\nproxyProtocol: gRPC"},
		{KindServer, "podSelector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}\nport: 8080\naccessPolicy: audit"},
		{KindServer, "podSelector: {}\nport: 9090"},
		{KindAuthorizationPolicy, "targetRef: {group: policy.trellis.dev, kind: Server, name: emoji-grpc}\nrequiredAuthenticationRefs:\n- {group: policy.trellis.dev, kind: MeshTLSAuthentication, name: web-only}"},
		{KindAuthorizationPolicy, "targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: list}\nrequiredAuthenticationRefs:\n- {kind: ServiceAccount, name: web, namespace: front}"},
		{KindAuthorizationPolicy, "targetRef: {kind: Namespace, name: shop}\nrequiredAuthenticationRefs:\n- {group: policy.trellis.dev, kind: NetworkAuthentication, name: office}"},
		{KindMeshTLSAuthentication, "identities: ['*']"},
		{KindMeshTLSAuthentication, "identities: [spiffe://cluster.local/ns/shop/sa/web, 'spiffe://cluster.local/ns/ops/*', '*.shop.serviceaccount.identity.linkerd.cluster.local']"},
		{KindMeshTLSAuthentication, "identityRefs: [{kind: ServiceAccount, name: web}, {kind: Namespace, name: ops}]"},
		{KindNetworkAuthentication, "networks: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}, {cidr: 'fd00::/8'}]"},
		{KindHTTPLocalRateLimitPolicy, "targetRef: {group: policy.trellis.dev, kind: Server, name: web-http}\ntotal: {requestsPerSecond: 100}\nidentity: {requestsPerSecond: 20}\noverrides:\n- requestsPerSecond: 50\n  clientRefs: [{kind: ServiceAccount, name: batch}]"},
		{KindHTTPLocalRateLimitPolicy, "targetRef: {kind: Service, name: web}\ntotal: {requestsPerSecond: 100}\noverrides:\n- requestsPerSecond: 5\n  clientRefs: [{kind: ServiceAccount, name: batch}]"},
		{KindEgressNetwork, "networks: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]\ntrafficPolicy: Deny"},
		{KindEgressNetwork, "trafficPolicy: Allow"},
	} {
		r := policyObject(t, tc.kind, "x", tc.spec)
		if err := (Kinds{}).Check(&r); err != nil {
			t.Errorf("%s %q: %v", tc.kind, tc.spec, err)
		}
	}
}

// Invalid objects are refused naming the field.
func TestPolicyKindsNameTheField(t *testing.T) {
	for _, tc := range []struct{ kind, spec, want string }{
		{KindServer, "port: 80", "spec.podSelector: required"},
		{KindServer, "podSelector: {}\nport: 0", "spec.port: 0"},
		{KindServer, "podSelector: {}\nport: Not_A_Name", "spec.port"},
		{KindServer, "podSelector: {matchExpressions: [{key: app, operator: Near}]}\nport: 80", "spec.podSelector"},
		{KindServer, "podSelector: {}\nport: 80\nproxyProtocol: HTTP/3", `spec.proxyProtocol: "HTTP/3"`},
		{KindServer, "podSelector: {}\nport: 80\naccessPolicy: allow", `spec.accessPolicy: "allow"`},
		{KindServer, "podSelector: {}\nport: 80\nextra: 1", `unknown field "extra"`},
		{KindAuthorizationPolicy, "targetRef: {kind: Service, name: web}\nrequiredAuthenticationRefs: [{kind: ServiceAccount, name: a}]", "spec.targetRef: Service: must be policy.trellis.dev/Server"},
		{KindAuthorizationPolicy, "targetRef: {group: policy.trellis.dev, kind: Server, name: s}", "spec.requiredAuthenticationRefs: at least one"},
		{KindAuthorizationPolicy, "targetRef: {group: policy.trellis.dev, kind: Server, name: s, namespace: other}\nrequiredAuthenticationRefs: [{kind: ServiceAccount, name: a}]", "spec.targetRef.namespace"},
		{KindAuthorizationPolicy, "targetRef: {group: policy.trellis.dev, kind: Server, name: s}\nrequiredAuthenticationRefs: [{kind: ServiceAccount, name: A_B}]", "spec.requiredAuthenticationRefs[0].name"},
		{KindMeshTLSAuthentication, "identities: []", "spec: identities or identityRefs is required"},
		{KindMeshTLSAuthentication, "identities: ['*', 'spiffe://cluster.local/web']", "spec.identities[1]"},
		{KindMeshTLSAuthentication, "identities: ['spiffe://cluster.local/ns/*/sa/*']", "spec.identities[0]"},
		{KindMeshTLSAuthentication, "identities: ['web..shop']", "spec.identities[0]"},
		{KindMeshTLSAuthentication, "identityRefs: [{kind: Pod, name: p}]", "spec.identityRefs[0]: Pod"},
		{KindNetworkAuthentication, "networks: []", "spec.networks: at least one"},
		{KindNetworkAuthentication, "networks: [{cidr: 10.0.0.0}]", "spec.networks[0].cidr"},
		{KindNetworkAuthentication, "networks: [{cidr: 10.0.0.0/16, except: [10.2.0.0/24]}]", "spec.networks[0].except[0]: 10.2.0.0/24 is not inside 10.0.0.0/16"},
		{KindHTTPLocalRateLimitPolicy, "targetRef: {group: policy.trellis.dev, kind: Server, name: s}", "spec: total, identity or overrides is required"},
		{KindHTTPLocalRateLimitPolicy, "targetRef: {group: policy.trellis.dev, kind: Server, name: s}\ntotal: {requestsPerSecond: 0}", "spec.total.requestsPerSecond: 0"},
		{KindHTTPLocalRateLimitPolicy, "targetRef: {group: policy.trellis.dev, kind: Server, name: s}\noverrides: [{requestsPerSecond: 5}]", "spec.overrides[0].clientRefs"},
		{KindHTTPLocalRateLimitPolicy, "targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: s}\ntotal: {requestsPerSecond: 5}", "spec.targetRef"},
		{KindHTTPLocalRateLimitPolicy, "targetRef: {kind: Service, name: emoji}\nidentity: {requestsPerSecond: 5}", "spec.identity: a limit on a Service applies at each caller's proxy"},
		{KindEgressNetwork, "trafficPolicy: allow", `spec.trafficPolicy: "allow"`},
		{KindEgressNetwork, "networks: [{cidr: 300.0.0.0/8}]\ntrafficPolicy: Deny", "spec.networks[0].cidr"},
	} {
		r := policyObject(t, tc.kind, "x", tc.spec)
		err := (Kinds{}).Check(&r)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: error %v; want one with %q", tc.kind, tc.spec, err, tc.want)
		}
	}
}

func TestSelectorsMayOverlap(t *testing.T) {
	sel := func(s string) *metav1.LabelSelector {
		var l metav1.LabelSelector
		if err := yaml.Unmarshal([]byte(s), &l); err != nil {
			t.Fatal(err)
		}
		return &l
	}
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"{}", "{matchLabels: {app: web}}", true},
		{"{matchLabels: {app: web}}", "{matchLabels: {app: web, tier: front}}", true},
		{"{matchLabels: {app: web}}", "{matchLabels: {app: api}}", false},
		{"{matchLabels: {app: web}}", "{matchExpressions: [{key: app, operator: In, values: [api, web]}]}", true},
		{"{matchLabels: {app: web}}", "{matchExpressions: [{key: app, operator: NotIn, values: [web]}]}", false},
		{"{matchExpressions: [{key: canary, operator: Exists}]}", "{matchExpressions: [{key: canary, operator: DoesNotExist}]}", false},
		{"{matchExpressions: [{key: canary, operator: DoesNotExist}]}", "{matchExpressions: [{key: canary, operator: NotIn, values: [x]}]}", true},
		{"{matchLabels: {app: web}}", "{matchLabels: {tier: front}}", true},
	} {
		if got := selectorsMayOverlap(sel(tc.a), sel(tc.b)); got != tc.want {
			t.Errorf("%s and %s: overlap %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := selectorsMayOverlap(sel(tc.b), sel(tc.a)); got != tc.want {
			t.Errorf("%s and %s: overlap %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
}

// The policy decoders never panic, and what they accept encodes again.
func FuzzPolicyKinds(f *testing.F) {
	f.Add(uint8(0), []byte(`{"podSelector":{"matchLabels":{"app":"web"}},"port":8080}`))
	f.Add(uint8(1), []byte(`{"targetRef":{"group":"policy.trellis.dev","kind":"Server","name":"s"},"requiredAuthenticationRefs":[{"kind":"ServiceAccount","name":"a"}]}`))
	f.Add(uint8(2), []byte(`{"identities":["*","spiffe://td/ns/a/*"]}`))
	f.Add(uint8(3), []byte(`{"networks":[{"cidr":"10.0.0.0/8","except":["10.0.0.0/9"]}]}`))
	f.Add(uint8(4), []byte(`{"targetRef":{"group":"policy.trellis.dev","kind":"Server","name":"s"},"identity":{"requestsPerSecond":3}}`))
	f.Add(uint8(5), []byte(`{"trafficPolicy":"Deny","networks":[{"cidr":"0.0.0.0/0"}]}`))
	kinds := []string{KindServer, KindAuthorizationPolicy, KindMeshTLSAuthentication, KindNetworkAuthentication, KindHTTPLocalRateLimitPolicy, KindEgressNetwork}
	f.Fuzz(func(t *testing.T, k uint8, spec []byte) {
		r := store.Resource{APIVersion: PolicyAPIVersion, Kind: kinds[int(k)%len(kinds)], Metadata: store.Metadata{Namespace: "ns", Name: "n"}, Spec: spec}
		if (Kinds{}).Check(&r) != nil {
			return
		}
		(Kinds{}).Conflict(r, []store.Resource{r})
	})
}

// The store refuses a batch whole when a Server in it overlaps another
// (in the store or in the batch), or a Server gets a second rate limit.
func TestStoreRefusesConflictingPolicies(t *testing.T) {
	db, err := store.Open(t.TempDir()+"/db", store.Options{Kinds: Kinds{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	web := policyObject(t, KindServer, "web-http", "podSelector: {matchLabels: {app: web}}\nport: 8080")
	if _, err := db.Apply(ctx, web); err != nil {
		t.Fatal(err)
	}
	// Same port, other workloads; the same workloads, another port: fine.
	for _, r := range []store.Resource{
		policyObject(t, KindServer, "api-http", "podSelector: {matchLabels: {app: api}}\nport: 8080"),
		policyObject(t, KindServer, "web-admin", "podSelector: {matchLabels: {app: web}}\nport: 9090"),
		policyObject(t, KindHTTPLocalRateLimitPolicy, "web-limit", "targetRef: {group: policy.trellis.dev, kind: Server, name: web-http}\ntotal: {requestsPerSecond: 10}"),
	} {
		if _, err := db.Apply(ctx, r); err != nil {
			t.Fatalf("%s: %v", r.Metadata.Name, err)
		}
	}
	// Updating a Server in place does not conflict with itself.
	if _, err := db.Apply(ctx, policyObject(t, KindServer, "web-http", "podSelector: {matchLabels: {app: web}}\nport: 8080\naccessPolicy: audit")); err != nil {
		t.Fatalf("updating web-http: %v", err)
	}
	for _, tc := range []struct {
		batch []store.Resource
		want  string
	}{
		{[]store.Resource{policyObject(t, KindServer, "all-8080", "podSelector: {}\nport: 8080")},
			`spec.podSelector: may select workloads that Server "api-http" selects for port 8080 too`},
		{[]store.Resource{
			policyObject(t, KindMeshTLSAuthentication, "anyone", "identities: ['*']"),
			policyObject(t, KindServer, "db-a", "podSelector: {matchLabels: {app: db}}\nport: 5432"),
			policyObject(t, KindServer, "db-b", "podSelector: {matchExpressions: [{key: app, operator: In, values: [db, cache]}]}\nport: 5432"),
		}, `Server/shop/db-a: spec.podSelector: may select workloads that Server "db-b" selects`},
		{[]store.Resource{policyObject(t, KindHTTPLocalRateLimitPolicy, "web-limit-2", "targetRef: {group: policy.trellis.dev, kind: Server, name: web-http}\nidentity: {requestsPerSecond: 5}")},
			`spec.targetRef: Server "web-http" has rate limit policy "web-limit" already`},
		{[]store.Resource{ // a limit on the Service web-http may be added, but not two
			policyObject(t, KindHTTPLocalRateLimitPolicy, "callers-1", "targetRef: {kind: Service, name: web-http}\ntotal: {requestsPerSecond: 5}"),
			policyObject(t, KindHTTPLocalRateLimitPolicy, "callers-2", "targetRef: {kind: Service, name: web-http}\ntotal: {requestsPerSecond: 6}")},
			`rate limit policy "callers-2" already: one per Service`},
	} {
		_, err := db.ApplyAll(ctx, tc.batch)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v; want one with %q", err, tc.want)
		}
	}
	list, _, err := db.List(ctx, "", "", nil)
	if err != nil || len(list) != 4 {
		t.Fatalf("after the refused batches the store holds %d objects (%v); want the 4 applied", len(list), err)
	}
}
