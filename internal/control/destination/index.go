package destination

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// endpointSet is one published, immutable view of a service port: what
// every stream watching it should converge to.
type endpointSet struct {
	exists    bool
	fqn       string
	opaque    bool
	endpoints map[string]*destinationv1.Endpoint // by address
	labels    map[string]string
	matches   []*destinationv1.RouteMatch
	rules     []*destinationv1.RouteRule
	limit     *destinationv1.ClientRateLimit
}

// profile is the set's Profile message.
func (s *endpointSet) profile() *destinationv1.Profile {
	return &destinationv1.Profile{FullyQualifiedName: s.fqn, Opaque: s.opaque, Matches: s.matches, Rules: s.rules, RateLimit: s.limit}
}

// service is the index's state of one namespace/name: its Service
// resource, if any, and its registered workloads.
type service struct {
	spec      *resources.ServiceSpec
	workloads map[string]workload // by instance name
}

type workload struct {
	spec   resources.WorkloadSpec
	labels map[string]string
}

// Index keeps the services and workloads of the store in memory, applies
// store events in order on one goroutine, and pushes a fresh endpointSet
// to every subscription whose service changed. It never blocks on a
// subscriber: each has a bounded queue, and one that overflows is closed.
type Index struct {
	store  store.Store
	domain string
	queue  int
	log    *slog.Logger

	ready     chan struct{}
	readyOnce sync.Once
	done      chan struct{} // closed when Run returns: streams end

	mu       sync.Mutex
	services map[string]*service // "namespace/name"
	byIP     map[netip.Addr]string
	owner    map[string]string // workload "namespace/name" -> service key
	routes   map[string]route  // "Kind/namespace/name"
	// clientLimits are the rate limit policies, by "namespace/name".
	clientLimits map[string]clientLimit
	subs         map[string]map[*subscription]struct{}
	// ipSubs wait for a service to take a virtual IP nobody has yet.
	ipSubs    map[netip.Addr]map[*subscription]struct{}
	overflows int
}

// NewIndex returns an index of st for the cluster domain; each
// subscription may fall queue updates behind before it is closed.
func NewIndex(st store.Store, domain string, queue int, log *slog.Logger) *Index {
	return &Index{store: st, domain: domain, queue: queue, log: log, ready: make(chan struct{}), done: make(chan struct{}),
		services: map[string]*service{}, byIP: map[netip.Addr]string{}, owner: map[string]string{}, routes: map[string]route{},
		clientLimits: map[string]clientLimit{}, subs: map[string]map[*subscription]struct{}{}, ipSubs: map[netip.Addr]map[*subscription]struct{}{}}
}

// Run lists the store, then follows its watch; when the watch ends early
// (this index fell behind, or the store forgot the version) it lists again.
func (ix *Index) Run(ctx context.Context) error {
	defer close(ix.done)
	for ctx.Err() == nil {
		rv, err := ix.resync(ctx)
		if err != nil {
			ix.log.Warn("listing the store failed; retrying", "error", err)
			if !sleep(ctx, time.Second) {
				break
			}
			continue
		}
		ix.readyOnce.Do(func() { close(ix.ready) })
		events, err := ix.store.Watch(ctx, "", rv)
		if err != nil {
			if !errors.Is(err, store.ErrGone) {
				ix.log.Warn("watching the store failed; relisting", "error", err)
			}
			continue
		}
		for ev := range events {
			ix.apply(ev)
		}
		if ctx.Err() == nil {
			ix.log.Info("store watch ended; relisting")
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// resync rebuilds the index from a full listing and updates every subscription.
func (ix *Index) resync(ctx context.Context) (uint64, error) {
	// Watching from the first listing's version replays whatever changed
	// between the two listings; applying an event twice is harmless.
	svcs, rv, err := ix.store.List(ctx, resources.KindService, "", nil)
	if err != nil {
		return 0, err
	}
	wls, _, err := ix.store.List(ctx, resources.KindWorkload, "", nil)
	if err != nil {
		return 0, err
	}
	var rts []store.Resource
	for _, kind := range []string{resources.KindHTTPRoute, resources.KindGRPCRoute} {
		l, _, err := ix.store.List(ctx, kind, "", nil)
		if err != nil {
			return 0, err
		}
		rts = append(rts, l...)
	}
	limits, _, err := ix.store.List(ctx, resources.KindHTTPLocalRateLimitPolicy, "", nil)
	if err != nil {
		return 0, err
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.services, ix.byIP, ix.owner, ix.routes = map[string]*service{}, map[netip.Addr]string{}, map[string]string{}, map[string]route{}
	ix.clientLimits = map[string]clientLimit{}
	for _, r := range limits {
		ix.clientLimits[r.Metadata.Namespace+"/"+r.Metadata.Name] = newClientLimit(r)
	}
	for _, r := range svcs {
		ix.setService(r)
	}
	for _, r := range wls {
		ix.setWorkload(r)
	}
	for _, r := range rts {
		ix.routes[r.Key().String()] = newRoute(r)
	}
	for key := range ix.subs {
		ix.publish(key)
	}
	return rv, nil
}

// apply folds one store event into the index and publishes what changed.
func (ix *Index) apply(ev store.Event) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	r := ev.Object
	key := r.Metadata.Namespace + "/" + r.Metadata.Name
	switch r.Kind {
	case resources.KindService:
		if ev.Type == store.Deleted {
			if s := ix.services[key]; s != nil && s.spec != nil {
				if ip, err := netip.ParseAddr(s.spec.ClusterIP); err == nil {
					delete(ix.byIP, ip)
				}
				s.spec = nil
			}
		} else {
			ix.setService(r)
		}
		ix.publish(key)
	case resources.KindHTTPRoute, resources.KindGRPCRoute:
		k := r.Key().String()
		affected := map[string]bool{}
		for _, p := range ix.routes[k].parents {
			affected[p.service] = true
		}
		if ev.Type == store.Deleted {
			delete(ix.routes, k)
		} else {
			rt := newRoute(r)
			ix.routes[k] = rt
			for _, p := range rt.parents {
				affected[p.service] = true
			}
		}
		for svc := range affected {
			ix.publish(svc)
		}
	case resources.KindHTTPLocalRateLimitPolicy:
		old := ix.clientLimits[key].service
		delete(ix.clientLimits, key)
		if ev.Type != store.Deleted {
			ix.clientLimits[key] = newClientLimit(r)
		}
		for _, svc := range []string{old, ix.clientLimits[key].service} {
			if svc != "" {
				ix.publish(svc)
			}
		}
	case resources.KindWorkload:
		old := ix.owner[key]
		oldAddr := ix.removeWorkload(key)
		newAddr := ""
		if ev.Type != store.Deleted {
			newAddr = ix.setWorkload(r)
		}
		if old != "" && old != ix.owner[key] {
			ix.publish(old)
		}
		if svc := ix.owner[key]; svc != "" {
			ix.publish(svc)
		}
		if ip, err := netip.ParseAddr(oldAddr); err == nil {
			ix.publishEndpoint(ip)
		}
		if ip, err := netip.ParseAddr(newAddr); err == nil && newAddr != oldAddr {
			ix.publishEndpoint(ip)
		}
	}
}

// buildEndpoint is the set of a stream that asked for ip:port, an address
// no service has: the workload listening there, if one does — a call to
// an instance's own address is mTLS to its proxy too — else nothing.
func (ix *Index) buildEndpoint(ip netip.Addr, port int) *endpointSet {
	set := &endpointSet{endpoints: map[string]*destinationv1.Endpoint{}}
	addr, hostPort := ip.String(), net.JoinHostPort(ip.String(), strconv.Itoa(port))
	for _, key := range slices.Sorted(maps.Keys(ix.services)) { // a Pod behind several Services: the first
		for inst, w := range ix.services[key].workloads {
			if _, dup := set.endpoints[hostPort]; dup || w.spec.Address != addr ||
				!slices.ContainsFunc(w.spec.Ports, func(p resources.WorkloadPort) bool { return p.TargetPort == port }) {
				continue
			}
			ns, name, _ := strings.Cut(key, "/")
			set.exists, set.labels = true, map[string]string{"dst_service": name, "dst_namespace": ns}
			set.endpoints[hostPort] = endpointOf(w, inst, addr, port)
		}
	}
	return set
}

// publishEndpoint pushes the sets of the streams that asked for ip, an
// address no service has.
func (ix *Index) publishEndpoint(ip netip.Addr) {
	for sub := range ix.ipSubs[ip] {
		ix.push(sub, ix.buildEndpoint(ip, sub.port))
	}
}

func (ix *Index) svc(key string) *service {
	s := ix.services[key]
	if s == nil {
		s = &service{workloads: map[string]workload{}}
		ix.services[key] = s
	}
	return s
}

func (ix *Index) setService(r store.Resource) {
	var spec resources.ServiceSpec
	if err := json.Unmarshal(r.Spec, &spec); err != nil {
		ix.log.Warn("skipping an unreadable service", "service", r.Key().String(), "error", err)
		return
	}
	key := r.Metadata.Namespace + "/" + r.Metadata.Name
	s := ix.svc(key)
	if s.spec != nil {
		if ip, err := netip.ParseAddr(s.spec.ClusterIP); err == nil {
			delete(ix.byIP, ip)
		}
	}
	s.spec = &spec
	if ip, err := netip.ParseAddr(spec.ClusterIP); err == nil {
		ix.byIP[ip] = key
		// Streams that asked for this IP before it was taken follow the
		// service from now on (apply publishes it to them).
		for sub := range ix.ipSubs[ip] {
			sub.key = key
			ix.addSub(sub)
		}
		delete(ix.ipSubs, ip)
	}
}

func (ix *Index) addSub(sub *subscription) {
	if ix.subs[sub.key] == nil {
		ix.subs[sub.key] = map[*subscription]struct{}{}
	}
	ix.subs[sub.key][sub] = struct{}{}
}

// setWorkload indexes r and returns its address.
func (ix *Index) setWorkload(r store.Resource) string {
	var spec resources.WorkloadSpec
	if err := json.Unmarshal(r.Spec, &spec); err != nil {
		ix.log.Warn("skipping an unreadable workload", "workload", r.Key().String(), "error", err)
		return ""
	}
	svcKey := r.Metadata.Namespace + "/" + spec.Service
	ix.svc(svcKey).workloads[r.Metadata.Name] = workload{spec: spec, labels: r.Metadata.Labels}
	ix.owner[r.Metadata.Namespace+"/"+r.Metadata.Name] = svcKey
	return spec.Address
}

// removeWorkload forgets workload key and returns the address it had.
func (ix *Index) removeWorkload(key string) string {
	svcKey, ok := ix.owner[key]
	if !ok {
		return ""
	}
	delete(ix.owner, key)
	s := ix.services[svcKey]
	if s == nil {
		return ""
	}
	_, name, _ := strings.Cut(key, "/")
	addr := s.workloads[name].spec.Address
	delete(s.workloads, name)
	return addr
}

// publish pushes the current set of service key to each of its subscriptions.
func (ix *Index) publish(key string) {
	sets := map[int]*endpointSet{}
	for sub := range ix.subs[key] {
		set, ok := sets[sub.port]
		if !ok {
			set = ix.build(key, sub.port)
			sets[sub.port] = set
		}
		ix.push(sub, set)
	}
}

func (ix *Index) push(sub *subscription, set *endpointSet) {
	select {
	case sub.queue <- set:
	default:
		ix.overflows++
		sub.overflow()
		delete(ix.subs[sub.key], sub)
	}
}

// build renders the endpoints of port on service key.
func (ix *Index) build(key string, port int) *endpointSet {
	ns, name, _ := strings.Cut(key, "/")
	set := &endpointSet{endpoints: map[string]*destinationv1.Endpoint{},
		labels: map[string]string{"dst_service": name, "dst_namespace": ns}}
	if attached := ix.attached(key, port); len(attached) > 0 {
		set.matches, set.rules = compileRoutes(port, ix.domain, attached)
	}
	set.limit = ix.clientLimitOf(key)
	s := ix.services[key]
	if s == nil {
		return set
	}
	if s.spec != nil {
		set.exists = true
		set.fqn = name + "." + ns + ".svc." + ix.domain
		for _, p := range s.spec.Ports {
			if p.Port == port && (p.Protocol == "opaque" || p.Protocol == "tcp") {
				set.opaque = true
			}
		}
	}
	for inst, w := range s.workloads {
		for _, p := range w.spec.Ports {
			if p.Port != port {
				continue
			}
			set.exists = true
			ep := endpointOf(w, inst, w.spec.Address, p.TargetPort)
			set.endpoints[ep.Address] = ep
		}
	}
	return set
}

// endpointOf is workload w (instance inst) at address:port.
func endpointOf(w workload, inst, address string, port int) *destinationv1.Endpoint {
	labels := map[string]string{"dst_instance": inst, "dst_workload": w.labels[resources.WorkloadLabel]}
	if labels["dst_workload"] == "" {
		labels["dst_workload"] = inst
	}
	ep := &destinationv1.Endpoint{Address: net.JoinHostPort(address, strconv.Itoa(port)), Weight: 10000, Identity: w.spec.Identity,
		MeshPort: uint32(w.spec.MeshPort), MetricLabels: labels}
	if w.spec.Identity != "" { // a peer proxy speaks HTTP/2; the application itself may not
		ep.ProtocolHint = destinationv1.ProtocolHint_PROTOCOL_HINT_H2
	}
	return ep
}

// subscription is one stream's interest in a service port.
type subscription struct {
	key   string     // "namespace/name"; empty while waiting for ip to be taken
	ip    netip.Addr // the virtual IP asked for, if any
	port  int
	queue chan *endpointSet
	gone  chan struct{}
	once  sync.Once
}

func (s *subscription) overflow() { s.once.Do(func() { close(s.gone) }) }

// subscribe registers interest in what authority names and queues its
// current set. Unknown virtual IPs get one empty, non-existent set.
func (ix *Index) subscribe(ctx context.Context, authority, contextNS string) (*subscription, error) {
	t, err := parseAuthority(authority, contextNS, ix.domain)
	if err != nil {
		return nil, err
	}
	select {
	case <-ix.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	sub := &subscription{port: t.port, ip: t.ip, queue: make(chan *endpointSet, ix.queue), gone: make(chan struct{})}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if t.ip.IsValid() {
		key, ok := ix.byIP[t.ip]
		if !ok {
			if ix.ipSubs[t.ip] == nil {
				ix.ipSubs[t.ip] = map[*subscription]struct{}{}
			}
			ix.ipSubs[t.ip][sub] = struct{}{}
			sub.queue <- ix.buildEndpoint(t.ip, t.port)
			return sub, nil
		}
		t.namespace, t.name, _ = strings.Cut(key, "/")
	}
	sub.key = t.namespace + "/" + t.name
	ix.addSub(sub)
	sub.queue <- ix.build(sub.key, sub.port)
	return sub, nil
}

func (ix *Index) unsubscribe(sub *subscription) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if sub.key == "" {
		delete(ix.ipSubs[sub.ip], sub)
		if len(ix.ipSubs[sub.ip]) == 0 {
			delete(ix.ipSubs, sub.ip)
		}
		return
	}
	delete(ix.subs[sub.key], sub)
	if len(ix.subs[sub.key]) == 0 {
		delete(ix.subs, sub.key)
	}
}

// ServiceIP returns the virtual IP of a service (the DNS resolver).
func (ix *Index) ServiceIP(name, namespace string) (netip.Addr, bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	s := ix.services[namespace+"/"+name]
	if s == nil || s.spec == nil {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(s.spec.ClusterIP)
	return ip, err == nil
}

// Overflows counts subscriptions closed because they fell behind.
func (ix *Index) Overflows() int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.overflows
}

// attached lists, in a stable order (the compiler then orders matches by
// precedence), the routes attached to port of service key.
func (ix *Index) attached(key string, port int) []route {
	var keys []string
	for k, rt := range ix.routes {
		if attaches(rt, key, port) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make([]route, len(keys))
	for i, k := range keys {
		out[i] = ix.routes[k]
	}
	return out
}
