package policy

import (
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

func object(t *testing.T, kind, name, spec string) store.Resource {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	return store.Resource{Kind: kind, Metadata: store.Metadata{Namespace: "shop", Name: name}, Spec: json.RawMessage(js)}
}

// A workload gets the Servers that select it (a named port: the target
// port of the workload's port of that name), each with the authorizations
// that target it or its namespace, their authentications resolved; a
// missing authentication passes nobody.
func TestCompile(t *testing.T) {
	w := store.Resource{Kind: resources.KindWorkload, Metadata: store.Metadata{Namespace: "shop", Name: "api-0", Labels: map[string]string{"app": "api"}},
		Spec: json.RawMessage(`{"service": "api", "ports": [{"name": "grpc", "port": 80, "targetPort": 9091}]}`)}
	objs := Objects{
		resources.KindServer: {
			object(t, resources.KindServer, "api-http", "podSelector: {matchLabels: {app: api}}\nport: 8080\naccessPolicy: audit"),
			object(t, resources.KindServer, "web-http", "podSelector: {matchLabels: {app: web}}\nport: 8080"),
			object(t, resources.KindServer, "api-named", "podSelector: {}\nport: metrics"),
			object(t, resources.KindServer, "api-grpc", "podSelector: {matchLabels: {app: api}}\nport: grpc"),
			object(t, resources.KindServer, "all-admin", "podSelector: {}\nport: 9090\nproxyProtocol: HTTP/1"),
		},
		resources.KindAuthorizationPolicy: {
			object(t, resources.KindAuthorizationPolicy, "from-web", "targetRef: {group: policy.trellis.dev, kind: Server, name: api-http}\nrequiredAuthenticationRefs: [{group: policy.trellis.dev, kind: MeshTLSAuthentication, name: web}, {group: policy.trellis.dev, kind: NetworkAuthentication, name: office}]"),
			object(t, resources.KindAuthorizationPolicy, "whole-namespace", "targetRef: {kind: Namespace, name: shop}\nrequiredAuthenticationRefs: [{kind: ServiceAccount, name: ops, namespace: infra}]"),
			object(t, resources.KindAuthorizationPolicy, "dangling", "targetRef: {group: policy.trellis.dev, kind: Server, name: all-admin}\nrequiredAuthenticationRefs: [{group: policy.trellis.dev, kind: MeshTLSAuthentication, name: nobody}]"),
		},
		resources.KindMeshTLSAuthentication: {
			object(t, resources.KindMeshTLSAuthentication, "web", "identities: [spiffe://cluster.local/ns/shop/sa/web]\nidentityRefs: [{kind: Namespace, name: front}]"),
		},
		resources.KindNetworkAuthentication: {
			object(t, resources.KindNetworkAuthentication, "office", "networks: [{cidr: 192.168.0.0/16, except: [192.168.9.0/24]}]"),
		},
	}
	got, err := protojson.Marshal(Compile("shop", w, "cluster.local", objs))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"servers":[` +
		`{"name":"api-http","port":8080,"audit":true,"authorizations":[` +
		`{"name":"from-web","authentications":[{"kind":"MeshTLSAuthentication","name":"web","identities":["spiffe://cluster.local/ns/shop/sa/web","spiffe://cluster.local/ns/front/*"]},{"kind":"NetworkAuthentication","name":"office","networks":[{"cidr":"192.168.0.0/16","except":["192.168.9.0/24"]}]}]},` +
		`{"name":"whole-namespace","authentications":[{"kind":"ServiceAccount","name":"ops","identities":["spiffe://cluster.local/ns/infra/sa/ops"]}]}]},` +
		`{"name":"all-admin","port":9090,"proxyProtocol":"HTTP/1","authorizations":[` +
		`{"name":"dangling","authentications":[{"kind":"MeshTLSAuthentication","name":"nobody"}]},` +
		`{"name":"whole-namespace","authentications":[{"kind":"ServiceAccount","name":"ops","identities":["spiffe://cluster.local/ns/infra/sa/ops"]}]}]},` +
		`{"name":"api-grpc","port":9091,"authorizations":[` +
		`{"name":"whole-namespace","authentications":[{"kind":"ServiceAccount","name":"ops","identities":["spiffe://cluster.local/ns/infra/sa/ops"]}]}]}]}`
	var g, w2 any
	json.Unmarshal(got, &g)
	json.Unmarshal([]byte(want), &w2)
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w2)
	if string(gb) != string(wb) {
		t.Errorf("compiled:\n%s\nwant:\n%s", gb, wb)
	}
}

// Two Servers that claim the same port of a workload — one by name, one
// by number, which the store cannot tell apart — leave it a Server that
// denies every call, naming both.
func TestCompileConflictingServersDeny(t *testing.T) {
	w := store.Resource{Kind: resources.KindWorkload, Metadata: store.Metadata{Namespace: "shop", Name: "api-0", Labels: map[string]string{"app": "api"}},
		Spec: json.RawMessage(`{"service": "api", "ports": [{"name": "grpc", "port": 80, "targetPort": 9091}]}`)}
	objs := Objects{
		resources.KindServer: {
			object(t, resources.KindServer, "strict", "podSelector: {matchLabels: {app: api}}\nport: grpc"),
			object(t, resources.KindServer, "open", "podSelector: {}\nport: 9091"),
			object(t, resources.KindServer, "admin", "podSelector: {}\nport: 9090"),
		},
		resources.KindAuthorizationPolicy: {
			object(t, resources.KindAuthorizationPolicy, "anyone", "targetRef: {group: policy.trellis.dev, kind: Server, name: open}\nrequiredAuthenticationRefs: [{group: policy.trellis.dev, kind: NetworkAuthentication, name: all}]"),
		},
	}
	got, err := protojson.Marshal(Compile("shop", w, "cluster.local", objs))
	if err != nil {
		t.Fatal(err)
	}
	var g any
	json.Unmarshal(got, &g)
	gb, _ := json.Marshal(g)
	if want := `{"servers":[{"name":"admin","port":9090},{"name":"conflict:open,strict","port":9091}]}`; string(gb) != want {
		t.Errorf("compiled %s, want %s", gb, want)
	}
}

// A GRPCRoute attached to a Server authorizes as an HTTPRoute does.
func TestCompileGRPCRoute(t *testing.T) {
	w := store.Resource{Kind: resources.KindWorkload, Metadata: store.Metadata{Namespace: "shop", Name: "api-0", Labels: map[string]string{"app": "api"}}}
	objs := Objects{
		resources.KindServer: {object(t, resources.KindServer, "api-grpc", "podSelector: {matchLabels: {app: api}}\nport: 9090\nproxyProtocol: gRPC")},
		resources.KindGRPCRoute: {object(t, resources.KindGRPCRoute, "reads",
			"parentRefs: [{group: policy.trellis.dev, kind: Server, name: api-grpc}]\nrules: [{matches: [{method: {service: shop.Catalog, method: List}}]}]")},
		resources.KindAuthorizationPolicy: {object(t, resources.KindAuthorizationPolicy, "reads-from-web",
			"targetRef: {group: gateway.networking.k8s.io, kind: GRPCRoute, name: reads}\nrequiredAuthenticationRefs: [{kind: ServiceAccount, name: web}]")},
	}
	p := Compile("shop", w, "cluster.local", objs)
	if len(p.Servers) != 1 || p.Servers[0].Routes == nil || len(p.Servers[0].Routes.Rules) != 1 || p.Servers[0].Routes.Rules[0].Kind != resources.KindGRPCRoute {
		t.Fatalf("compiled %v", p)
	}
	if a := p.Servers[0].Authorizations; len(a) != 1 || a[0].Route != "shop/reads" || a[0].Authentications[0].Identities[0] != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Fatalf("authorizations %v", a)
	}
}
