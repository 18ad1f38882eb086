package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// DefaultServiceCIDR is where services' virtual IPs come from.
var DefaultServiceCIDR = netip.MustParsePrefix("10.240.0.0/16")

// ClusterIPs gives every Service a virtual IP from a CIDR, one at a time so
// that no two services get the same one.
type ClusterIPs struct {
	Store store.Store
	CIDR  netip.Prefix

	mu sync.Mutex
}

// Apply writes r, giving it a clusterIP first if it is a Service without
// one: the one it already has in the store, else the lowest free address.
// Allocation and write happen under one lock, so no two services get the
// same address.
func (c *ClusterIPs) Apply(ctx context.Context, r store.Resource) (store.Resource, error) {
	if r.Kind != resources.KindService {
		return c.Store.Apply(ctx, r)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var spec map[string]any
	if err := json.Unmarshal(r.Spec, &spec); err == nil && spec != nil {
		if _, ok := spec["serviceAccounts"]; !ok {
			// An applied Service that names no identities keeps the ones
			// it is bound to.
			if bound := c.bound(ctx, r.Metadata.Namespace, r.Metadata.Name); len(bound) > 0 {
				spec["serviceAccounts"] = bound
				r.Spec, _ = json.Marshal(spec)
			}
		}
		if ip, _ := spec["clusterIP"].(string); ip == "" {
			ip, err := c.pick(ctx, r.Metadata.Namespace, r.Metadata.Name)
			if err != nil {
				return store.Resource{}, err
			}
			spec["clusterIP"] = ip.String()
			r.Spec, _ = json.Marshal(spec)
		}
	}
	return c.Store.Apply(ctx, r)
}

// ErrNotBound refuses a registration under a service whose identities do
// not include the caller's.
var ErrNotBound = errors.New("service account not bound to the service")

// EnsureService creates service namespace/name with ports, bound to service
// account sa, if it does not exist; if it does, it checks that sa may serve
// it (an unbound service is bound to sa) and adds any of ports it lacks.
func (c *ClusterIPs) EnsureService(ctx context.Context, namespace, name string, ports []resources.ServicePort, sa string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		cur, err := c.Store.Get(ctx, store.Key{Kind: resources.KindService, Namespace: namespace, Name: name})
		var spec resources.ServiceSpec
		switch {
		case errors.Is(err, store.ErrNotFound):
			ip, err := c.pick(ctx, namespace, name)
			if err != nil {
				return err
			}
			spec = resources.ServiceSpec{Ports: ports, ClusterIP: ip.String(), ServiceAccounts: []string{sa}}
			cur = store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindService,
				Metadata: store.Metadata{Name: name, Namespace: namespace}}
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(cur.Spec, &spec); err != nil {
				return fmt.Errorf("service %s/%s: %w", namespace, name, err)
			}
			changed := false
			switch {
			case len(spec.ServiceAccounts) == 0:
				spec.ServiceAccounts, changed = []string{sa}, true
			case !spec.Serves(sa):
				return fmt.Errorf("%w: service %s/%s is served by %s, not %q (list it in the Service's spec.serviceAccounts)",
					ErrNotBound, namespace, name, strings.Join(spec.ServiceAccounts, ", "), sa)
			}
			for _, p := range ports {
				if !slices.ContainsFunc(spec.Ports, func(q resources.ServicePort) bool { return q.Port == p.Port }) {
					spec.Ports, changed = append(spec.Ports, p), true
				}
			}
			if !changed {
				return nil
			}
		}
		cur.Spec, _ = json.Marshal(spec)
		_, err = c.Store.Apply(ctx, cur)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
}

// bound is the service accounts stored service namespace/name is bound to.
func (c *ClusterIPs) bound(ctx context.Context, namespace, name string) []string {
	cur, err := c.Store.Get(ctx, store.Key{Kind: resources.KindService, Namespace: namespace, Name: name})
	if err != nil {
		return nil
	}
	var spec resources.ServiceSpec
	json.Unmarshal(cur.Spec, &spec)
	return spec.ServiceAccounts
}

// pick returns the clusterIP namespace/name already has, else the lowest
// address of the CIDR no service uses.
func (c *ClusterIPs) pick(ctx context.Context, namespace, name string) (netip.Addr, error) {
	svcs, _, err := c.Store.List(ctx, resources.KindService, "", nil)
	if err != nil {
		return netip.Addr{}, err
	}
	used := map[netip.Addr]bool{}
	for _, s := range svcs {
		var spec resources.ServiceSpec
		json.Unmarshal(s.Spec, &spec)
		ip, err := netip.ParseAddr(spec.ClusterIP)
		if err != nil {
			continue
		}
		if s.Metadata.Namespace == namespace && s.Metadata.Name == name {
			return ip, nil
		}
		used[ip] = true
	}
	for ip := c.CIDR.Masked().Addr().Next(); c.CIDR.Contains(ip); ip = ip.Next() {
		if !used[ip] && c.CIDR.Contains(ip.Next()) { // skip the broadcast address
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free service IP left in %s", c.CIDR)
}
