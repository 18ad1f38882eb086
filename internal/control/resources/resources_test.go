package resources

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/control/store"
)

func resource(kind, ns, spec string) *store.Resource {
	return &store.Resource{APIVersion: APIVersion, Kind: kind, Metadata: store.Metadata{Name: "web", Namespace: ns}, Spec: json.RawMessage(spec)}
}

func TestCheckNamesTheFieldAtFault(t *testing.T) {
	const id = `"identity":"spiffe://cluster.local/ns/default/sa/web"`
	for _, tc := range []struct {
		name, kind, spec, field string
	}{
		{"valid service", KindService, `{"ports":[{"port":8080,"protocol":"http"}]}`, ""},
		{"valid workload", KindWorkload, `{"service":"web",` + id + `,"address":"10.0.0.1","ports":[{"port":80,"targetPort":8080}],"meshPort":4143}`, ""},
		{"unknown kind", "Widget", `{}`, "kind"},
		{"no spec", KindService, ``, "spec"},
		{"unknown field", KindService, `{"ports":[{"port":80}],"colour":"red"}`, "spec"},
		{"no ports", KindService, `{"ports":[]}`, "spec.ports"},
		{"port out of range", KindService, `{"ports":[{"port":80},{"port":70000}]}`, "spec.ports[1].port"},
		{"duplicate port", KindService, `{"ports":[{"port":80},{"port":80}]}`, "spec.ports[1].port"},
		{"bad protocol", KindService, `{"ports":[{"port":80,"protocol":"smtp"}]}`, "spec.ports[0].protocol"},
		{"bad cluster IP", KindService, `{"ports":[{"port":80}],"clusterIP":"10.0.0"}`, "spec.clusterIP"},
		{"workload without service", KindWorkload, `{` + id + `,"address":"10.0.0.1","ports":[{"port":80,"targetPort":80}],"meshPort":4143}`, "spec.service"},
		{"mesh port without a proxy", KindWorkload, `{"service":"web","address":"10.0.0.1","ports":[{"port":80,"targetPort":80}],"meshPort":4143}`, "spec.meshPort"},
		{"identity of another namespace", KindWorkload, `{"service":"web","identity":"spiffe://cluster.local/ns/other/sa/web","address":"10.0.0.1","ports":[{"port":80,"targetPort":80}],"meshPort":4143}`, "spec.identity"},
		{"bad address", KindWorkload, `{"service":"web",` + id + `,"address":"nowhere","ports":[{"port":80,"targetPort":80}],"meshPort":4143}`, "spec.address"},
		{"bad target port", KindWorkload, `{"service":"web",` + id + `,"address":"10.0.0.1","ports":[{"port":80,"targetPort":0}],"meshPort":4143}`, "spec.ports[0].targetPort"},
		{"no mesh port", KindWorkload, `{"service":"web",` + id + `,"address":"10.0.0.1","ports":[{"port":80,"targetPort":80}]}`, "spec.meshPort"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Kinds{}.Check(resource(tc.kind, "default", tc.spec))
			if tc.field == "" {
				if err != nil {
					t.Fatalf("valid object refused: %v", err)
				}
				return
			}
			var ve *store.ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.field {
				t.Fatalf("error %v; want a ValidationError on %s", err, tc.field)
			}
		})
	}
}

func TestCheckRequiresOurAPIVersion(t *testing.T) {
	r := resource(KindService, "default", `{"ports":[{"port":80}]}`)
	r.APIVersion = "v1"
	if err := (Kinds{}).Check(r); err == nil || !strings.HasPrefix(err.Error(), "apiVersion") {
		t.Fatalf("error %v; want one on apiVersion", err)
	}
	if !(Kinds{}).Namespaced(KindService) || (Kinds{}).Namespaced("Widget") {
		t.Error("Service is namespaced; unknown kinds are not")
	}
}
