package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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

// EnsureService creates service namespace/name with ports if it does not
// exist, and adds any of ports it lacks if it does.
func (c *ClusterIPs) EnsureService(ctx context.Context, namespace, name string, ports []resources.ServicePort) error {
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
			spec = resources.ServiceSpec{Ports: ports, ClusterIP: ip.String()}
			cur = store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindService,
				Metadata: store.Metadata{Name: name, Namespace: namespace}}
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(cur.Spec, &spec); err != nil {
				return fmt.Errorf("service %s/%s: %w", namespace, name, err)
			}
			missing := false
			for _, p := range ports {
				if !slices.ContainsFunc(spec.Ports, func(q resources.ServicePort) bool { return q.Port == p.Port }) {
					spec.Ports, missing = append(spec.Ports, p), true
				}
			}
			if !missing {
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
