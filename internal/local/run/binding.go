package run

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// bindService lets the replicas' identity (service account --name) serve
// --service: the control plane refuses registrations under a service whose
// Service does not list the registering identity. A new Service is
// created bound to it; an existing one gets it added, so `trellis run
// --name web-v2 --service web` joins web as the operator asked.
func bindService(ctx context.Context, api *localapi.Client, o Options) error {
	key := store.Key{Kind: resources.KindService, Namespace: o.Namespace, Name: o.Service}
	cur, err := api.Get(ctx, key)
	var spec resources.ServiceSpec
	switch {
	case localapi.NotFound(err):
		spec.Ports = []resources.ServicePort{{Port: o.Port, Protocol: o.Protocol}}
		cur = store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindService,
			Metadata: store.Metadata{Name: o.Service, Namespace: o.Namespace,
				Annotations: map[string]string{resources.CreatedByAnnotation: "trellis-run"}}}
	case err != nil:
		return fmt.Errorf("service %s: %w", o.Service, err)
	default:
		if err := resources.Decode(cur.Spec, &spec); err != nil {
			return fmt.Errorf("service %s: %w", o.Service, err)
		}
		if len(spec.ServiceAccounts) == 0 || spec.Serves(o.Name) {
			return nil // unbound services are bound by the first registration
		}
	}
	spec.ServiceAccounts = append(spec.ServiceAccounts, o.Name)
	cur.Spec, _ = json.Marshal(spec)
	if _, err := api.Apply(ctx, []store.Resource{cur}); err != nil {
		return fmt.Errorf("binding service %s to service account %s: %w", o.Service, o.Name, err)
	}
	return nil
}
