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

// Apply writes r as ApplyAll does.
func (c *ClusterIPs) Apply(ctx context.Context, r store.Resource) (store.Resource, error) {
	out, err := c.ApplyAll(ctx, []store.Resource{r})
	if err != nil {
		var ie *store.ItemError
		if errors.As(err, &ie) {
			return store.Resource{}, ie.Err
		}
		return store.Resource{}, err
	}
	return out[0], nil
}

// ApplyAll writes rs in one transaction, giving every Service without a
// clusterIP one first: the one it already has in the store, else the
// lowest free address. An applied Service that names no identities keeps
// the ones it is bound to. Allocation and write happen under one lock, so
// no two services get the same address.
func (c *ClusterIPs) ApplyAll(ctx context.Context, rs []store.Resource) ([]store.Resource, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ips *allocator
	rs = slices.Clone(rs)
	for i := range rs {
		r := &rs[i]
		if r.Kind != resources.KindService {
			continue
		}
		var spec map[string]any
		if err := json.Unmarshal(r.Spec, &spec); err != nil || spec == nil {
			continue // the store says what is wrong with it
		}
		if _, ok := spec["serviceAccounts"]; !ok {
			if bound := c.bound(ctx, r.Metadata.Namespace, r.Metadata.Name); len(bound) > 0 {
				spec["serviceAccounts"] = bound
			}
		}
		if ip, _ := spec["clusterIP"].(string); ip == "" {
			if ips == nil {
				var err error
				if ips, err = c.allocator(ctx); err != nil {
					return nil, err
				}
			}
			ip, err := ips.pick(r.Metadata.Namespace, r.Metadata.Name)
			if err != nil {
				return nil, &store.ItemError{Index: i, Err: err}
			}
			spec["clusterIP"] = ip.String()
		}
		r.Spec, _ = json.Marshal(spec)
	}
	return c.Store.ApplyAll(ctx, rs)
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
			ips, err := c.allocator(ctx)
			if err != nil {
				return err
			}
			ip, err := ips.pick(namespace, name)
			if err != nil {
				return err
			}
			spec = resources.ServiceSpec{Ports: ports, ClusterIP: ip.String(), ServiceAccounts: []string{sa}}
			cur = store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindService,
				Metadata: store.Metadata{Name: name, Namespace: namespace, Annotations: map[string]string{resources.CreatedByAnnotation: "registry"}}}
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

// allocator hands out the service IPs the store's Services do not use.
type allocator struct {
	cidr netip.Prefix
	has  map[string]netip.Addr // namespace/name → its IP
	used map[netip.Addr]bool
}

// allocator reads the IPs in use.
func (c *ClusterIPs) allocator(ctx context.Context) (*allocator, error) {
	svcs, _, err := c.Store.List(ctx, resources.KindService, "", nil)
	if err != nil {
		return nil, err
	}
	a := &allocator{cidr: c.CIDR, has: map[string]netip.Addr{}, used: map[netip.Addr]bool{}}
	for _, s := range svcs {
		var spec resources.ServiceSpec
		json.Unmarshal(s.Spec, &spec)
		if ip, err := netip.ParseAddr(spec.ClusterIP); err == nil {
			a.has[s.Metadata.Namespace+"/"+s.Metadata.Name], a.used[ip] = ip, true
		}
	}
	return a, nil
}

// pick returns the clusterIP namespace/name already has, else the lowest
// address of the CIDR no service uses (nor any picked before).
func (a *allocator) pick(namespace, name string) (netip.Addr, error) {
	if ip, ok := a.has[namespace+"/"+name]; ok {
		return ip, nil
	}
	for ip := a.cidr.Masked().Addr().Next(); a.cidr.Contains(ip); ip = ip.Next() {
		if !a.used[ip] && a.cidr.Contains(ip.Next()) { // skip the broadcast address
			a.has[namespace+"/"+name], a.used[ip] = ip, true
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free service IP left in %s", a.cidr)
}
