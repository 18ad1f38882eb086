package plane

import (
	"fmt"
	"net"
	"net/http"
	"strconv"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/tap"
)

// tapHandler streams the live requests of the proxies a tap names
// (?target=KIND/NAME&namespace=NS, plus tap.ParseQuery's filters), tapping
// them with the control plane's own certificate — the only identity
// proxies serve tap to.
func (p *Plane) tapHandler() http.Handler {
	return tap.Handler(p.tapClient(), p.tapTargets)
}

// explainHandler answers what the proxies a request names
// (?target=KIND/NAME, as tap's) decided for their recent requests.
func (p *Plane) explainHandler() http.Handler {
	return tap.RecentHandler(p.tapClient(), p.tapTargets)
}

// tapClient reaches proxies' tap ports with the control plane's own
// certificate.
func (p *Plane) tapClient() *tap.Client {
	return &tap.Client{GetClientCertificate: p.identity.ClientCertificate, Roots: p.identity.CA().AnchorPool()}
}

// tapTargets resolves a tap request to the tap ports of the instances of
// its target: a workload, a service, a namespace, or one instance (pod).
func (p *Plane) tapTargets(r *http.Request) ([]tap.Target, *tapv1.ObserveRequest, error) {
	q := r.URL.Query()
	req, err := tap.ParseQuery(q)
	if err != nil {
		return nil, nil, err
	}
	raw := q.Get("target")
	if raw == "" {
		return nil, nil, fmt.Errorf("target: required, KIND/NAME such as workload/web")
	}
	kind, name := "", ""
	if ref, err := metricsapi.ParseRef(raw); err == nil {
		kind, name = ref.Kind, ref.Name
	} else if len(raw) > 4 && raw[:4] == "pod/" {
		kind, name = "pod", raw[4:]
	} else {
		return nil, nil, fmt.Errorf("target: %w", err)
	}
	ns := q.Get("namespace")
	if kind == "namespace" {
		ns = name
	}
	wls, _, err := p.store.List(r.Context(), resources.KindWorkload, ns, nil)
	if err != nil {
		return nil, nil, err
	}
	var targets []tap.Target
	for _, w := range wls {
		var spec resources.WorkloadSpec
		if resources.Decode(w.Spec, &spec) != nil || spec.TapPort == 0 {
			continue
		}
		workload := resources.WorkloadOf(w.Metadata)
		match := map[string]string{"workload": workload, "service": spec.Service, "namespace": w.Metadata.Namespace, "pod": w.Metadata.Name}[kind]
		if match != name {
			continue
		}
		targets = append(targets, tap.Target{Addr: net.JoinHostPort(spec.Address, strconv.Itoa(spec.TapPort)),
			Workload: w.Metadata.Name, Namespace: w.Metadata.Namespace, Identity: spec.Identity})
	}
	return targets, req, nil // none: the handler's 404
}
