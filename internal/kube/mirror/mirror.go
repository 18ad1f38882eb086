// Package mirror feeds the control plane's store from the Kubernetes API,
// so the destination service (and everything else that reads the store)
// serves a cluster unchanged: informers watch Services, EndpointSlices and
// Pods, and every change is reconciled into the store's own kinds — a
// Service per Kubernetes Service (its ClusterIP and TCP ports), and a
// Workload per ready endpoint: address and ports, and, when its Pod runs
// the Trellis proxy, the mesh port and the identity of its ServiceAccount
// (an endpoint without the proxy has no identity and is reached in
// plaintext). Informers relist and resume on their own after watch errors
// and API-server outages; while they do, the store keeps what it has, so
// proxies keep their endpoints.
//
// With the Gateway API served, HTTPRoutes and GRPCRoutes attached to
// Services are mirrored too (the store's route kinds are the Gateway
// API's), and each gets Trellis's status per parent Service: Accepted, or
// not with the store's reason, and ResolvedRefs (routes.go).
package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/kube/inject"
)

// SourceAnnotation marks what the mirror wrote: it only ever changes or
// removes objects carrying it.
const SourceAnnotation = "trellis.dev/source"

const source = "kubernetes"

// debounce gathers a burst of changes (a rollout) into one reconcile.
const debounce = 20 * time.Millisecond

// Mirror keeps a store in step with a cluster.
type Mirror struct {
	Client kubernetes.Interface
	// Gateway, when set, mirrors the cluster's HTTPRoutes and GRPCRoutes
	// too (if the API server serves them) and writes their status.
	Gateway     gwclient.Interface
	TrustDomain string
	Log         *slog.Logger

	last map[store.Key]written // what the store holds of the mirrored kinds
	full time.Time             // when last was read from the store
}

// Run mirrors into st until ctx ends.
func (m *Mirror) Run(ctx context.Context, st store.Store) error {
	f := informers.NewSharedInformerFactory(m.Client, 10*time.Minute)
	svcs, slices, pods := f.Core().V1().Services(), f.Discovery().V1().EndpointSlices(), f.Core().V1().Pods()
	kick := make(chan struct{}, 1)
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify(kick) },
		UpdateFunc: func(any, any) { notify(kick) },
		DeleteFunc: func(any) { notify(kick) },
	}
	defer f.Shutdown()
	if err := start(ctx, f, handler, svcs.Informer(), slices.Informer(), pods.Informer()); err != nil {
		return err
	}
	lists := listers{services: svcs.Lister().List, slices: slices.Lister().List, pods: pods.Lister().List}
	// Routes: mirrored from the first pass if the API server serves them,
	// else from when it does (the CRDs may be installed after Trellis).
	routes := make(chan *routeListers, 1)
	if m.Gateway != nil {
		served := m.gatewayServed()
		if !served {
			m.Log.Warn("the API server does not serve the Gateway API's HTTPRoute and GRPCRoute: routes are mirrored once it does (trellis install --crds)")
		}
		gf, err := m.startRoutes(ctx, handler, served, routes)
		if err != nil {
			return err
		}
		defer gf.Shutdown()
		if served {
			lists.routes = <-routes
		}
	}
	m.Log.Info("mirroring the cluster into the store", "routes", lists.routes != nil)
	for {
		if err := m.reconcile(ctx, st, lists); err != nil && ctx.Err() == nil {
			m.Log.Warn("mirroring the cluster failed; retrying", "error", err)
			time.AfterFunc(time.Second, func() { notify(kick) })
		}
		select {
		case <-ctx.Done():
			return nil
		case lists.routes = <-routes:
			m.Log.Info("the API server serves HTTPRoute and GRPCRoute now: mirroring routes")
		case <-kick:
			time.Sleep(debounce)
		}
	}
}

// RouteCheckInterval is how often the mirror asks whether the API server
// serves the route kinds, until it does.
var RouteCheckInterval = 30 * time.Second

// startRoutes starts the route informers and sends their listers on out:
// at once if served, else in the background once the API server serves the
// kinds. The factory it returns is shut down by the caller.
func (m *Mirror) startRoutes(ctx context.Context, handler cache.ResourceEventHandler, served bool, out chan<- *routeListers) (gwinformers.SharedInformerFactory, error) {
	gf := gwinformers.NewSharedInformerFactory(m.Gateway, 10*time.Minute)
	hr, gr := gf.Gateway().V1().HTTPRoutes(), gf.Gateway().V1().GRPCRoutes()
	listers := &routeListers{http: hr.Lister().List, grpc: gr.Lister().List}
	if served {
		if err := start(ctx, gf, handler, hr.Informer(), gr.Informer()); err != nil {
			return nil, err
		}
		out <- listers
		return gf, nil
	}
	go func() {
		t := time.NewTicker(RouteCheckInterval)
		defer t.Stop()
		for !m.gatewayServed() {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		if err := start(ctx, gf, handler, hr.Informer(), gr.Informer()); err != nil {
			m.Log.Warn("routes are not mirrored", "error", err)
			return
		}
		out <- listers
	}()
	return gf, nil
}

// factory is what start needs of an informer factory (client-go's and the
// Gateway API's).
type factory interface {
	Start(stop <-chan struct{})
	WaitForCacheSync(stop <-chan struct{}) map[reflect.Type]bool
}

// start has handler told of every change of infs, starts f and waits for
// its caches.
func start(ctx context.Context, f factory, handler cache.ResourceEventHandler, infs ...cache.SharedIndexInformer) error {
	for _, inf := range infs {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	f.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("mirror: the %v cache did not sync", typ)
		}
	}
	return nil
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

type listers struct {
	services func(labels.Selector) ([]*corev1.Service, error)
	slices   func(labels.Selector) ([]*discoveryv1.EndpointSlice, error)
	pods     func(labels.Selector) ([]*corev1.Pod, error)
	routes   *routeListers // nil: routes are not mirrored
}

// fullEvery is how often reconcile compares with the store itself rather
// than with what it last wrote (in case the store changed under it).
const fullEvery = 5 * time.Minute

// written is what the mirror last wrote of one object, and how the store
// took it.
type written struct {
	res store.Resource
	err error
}

// reconcile makes the store's mirrored objects what the cluster says, and
// the routes' status what the store made of them. It writes only what
// changed since its last pass — a store write is a transaction — and
// reads the store itself on the first pass and every fullEvery.
func (m *Mirror) reconcile(ctx context.Context, st store.Store, l listers) error {
	want, err := m.desired(l)
	if err != nil {
		return err
	}
	routes, err := l.routes.routes()
	if err != nil {
		return err
	}
	for _, r := range routes {
		want[r.key] = r.object
	}
	var errs []error
	if m.last == nil || time.Since(m.full) > fullEvery {
		if err := m.readStore(ctx, st); err != nil {
			return err
		}
	}
	for k, w := range m.last {
		if _, ok := want[k]; !ok && w.res.Metadata.Annotations[SourceAnnotation] == source {
			if err := st.Delete(ctx, k); err != nil && !errors.Is(err, store.ErrNotFound) {
				errs = append(errs, err)
				continue
			}
			delete(m.last, k)
		}
	}
	keys := make([]store.Key, 0, len(want))
	for k := range want {
		if w, ok := m.last[k]; !ok || !same(w.res, want[k]) {
			keys = append(keys, k)
		}
	}
	// Services before their Workloads, routes last: a proxy asking for a
	// ClusterIP must never learn that its service does not exist.
	order := map[string]int{resources.KindService: 0, resources.KindWorkload: 1, resources.KindHTTPRoute: 2, resources.KindGRPCRoute: 2}
	sort.Slice(keys, func(i, j int) bool { return order[keys[i].Kind] < order[keys[j].Kind] })
	for _, k := range keys {
		if w, ok := m.last[k]; ok && w.res.Metadata.Annotations[SourceAnnotation] != source {
			continue // applied by hand: the operator's wins
		}
		_, err := st.Apply(ctx, want[k])
		_, isRoute := routeKinds[k.Kind]
		switch {
		case err == nil || isRoute:
			// A route the store refuses is the user's to fix: its status
			// says why; retrying cannot help.
			m.last[k] = written{res: want[k], err: err}
		default:
			delete(m.last, k) // written again next pass
			errs = append(errs, fmt.Errorf("%s %s/%s: %w", k.Kind, k.Namespace, k.Name, err))
		}
	}
	if len(routes) > 0 {
		exists := func(ns, name string) bool {
			_, ok := want[store.Key{Kind: resources.KindService, Namespace: ns, Name: name}]
			return ok
		}
		applied := map[store.Key]error{}
		for _, r := range routes {
			applied[r.key] = m.last[r.key].err
		}
		if err := m.writeStatus(ctx, m.Gateway, routes, applied, exists); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// readStore makes the mirror's record of what it wrote the store's
// objects of the mirrored kinds (its own and those applied by hand).
func (m *Mirror) readStore(ctx context.Context, st store.Store) error {
	last := map[store.Key]written{}
	for _, kind := range []string{resources.KindService, resources.KindWorkload, resources.KindHTTPRoute, resources.KindGRPCRoute} {
		have, _, err := st.List(ctx, kind, "", nil)
		if err != nil {
			return err
		}
		for _, r := range have {
			last[store.Key{Kind: kind, Namespace: r.Metadata.Namespace, Name: r.Metadata.Name}] = written{res: r}
		}
	}
	m.last, m.full = last, time.Now()
	return nil
}

// same reports whether the store holds want already (as far as the mirror
// says anything about it).
func same(have, want store.Resource) bool {
	return have.APIVersion == want.APIVersion && bytes.Equal(have.Spec, want.Spec) &&
		maps.Equal(have.Metadata.Labels, want.Metadata.Labels) && maps.Equal(have.Metadata.Annotations, want.Metadata.Annotations)
}

// desired is every object the cluster implies, by key.
func (m *Mirror) desired(l listers) (map[store.Key]store.Resource, error) {
	svcs, err := l.services(labels.Everything())
	if err != nil {
		return nil, err
	}
	slices, err := l.slices(labels.Everything())
	if err != nil {
		return nil, err
	}
	pods, err := l.pods(labels.Everything())
	if err != nil {
		return nil, err
	}
	// Endpoints name their Pod (targetRef). Finished Pods keep their IP
	// after a new Pod may have taken it, so only running ones count;
	// terminating ones keep their identity until their endpoint goes.
	podByName := map[string]*corev1.Pod{}
	for _, p := range pods {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			podByName[p.Namespace+"/"+p.Name] = p
		}
	}
	slicesOf := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range slices {
		slicesOf[s.Namespace+"/"+s.Labels[discoveryv1.LabelServiceName]] = append(slicesOf[s.Namespace+"/"+s.Labels[discoveryv1.LabelServiceName]], s)
	}
	out := map[store.Key]store.Resource{}
	for _, svc := range svcs {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue // a DNS alias: nothing to balance
		}
		spec := resources.ServiceSpec{}
		if ip, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil && ip.Is4() {
			spec.ClusterIP = ip.String()
		} else if svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			continue // IPv6 services are not served yet
		}
		workloads := m.workloads(svc, slicesOf[svc.Namespace+"/"+svc.Name], podByName)
		for _, p := range svc.Spec.Ports {
			if p.Protocol == corev1.ProtocolTCP || p.Protocol == "" {
				spec.Ports = append(spec.Ports, resources.ServicePort{Name: p.Name, Port: int(p.Port), Protocol: protocolOf(p.AppProtocol)})
			}
		}
		if len(spec.Ports) == 0 {
			continue
		}
		out[store.Key{Kind: resources.KindService, Namespace: svc.Namespace, Name: svc.Name}] = object(resources.KindService, svc.Namespace, svc.Name, nil, spec)
		for _, w := range workloads {
			out[store.Key{Kind: resources.KindWorkload, Namespace: w.Metadata.Namespace, Name: w.Metadata.Name}] = w
		}
	}
	return out, nil
}

// workloads are svc's ready endpoints.
func (m *Mirror) workloads(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, podByName map[string]*corev1.Pod) []store.Resource {
	specs := map[string]*resources.WorkloadSpec{} // by instance name
	owners := map[string]string{}
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue // not ready (or terminating): no new requests
			}
			for _, addr := range ep.Addresses {
				name, w := "ip-"+strings.ReplaceAll(addr, ".", "-"), &resources.WorkloadSpec{Service: svc.Name, Address: addr}
				if pod := podOf(ep, svc.Namespace, podByName); pod != nil {
					name = pod.Name
					owners[name] = ownerOf(pod)
					if inject.Injected(pod) {
						id, err := meshid.New(m.TrustDomain, pod.Namespace, serviceAccount(pod))
						if err != nil {
							m.Log.Warn("endpoint left out: its ServiceAccount cannot be an identity", "pod", pod.Namespace+"/"+pod.Name, "error", err)
							continue
						}
						w.Identity, w.MeshPort, w.AdminPort, w.TapPort = id.String(), inject.InboundPort, inject.AdminPort, inject.TapPort
					}
				}
				if specs[name] == nil {
					specs[name] = w
				}
				w = specs[name]
				for _, p := range s.Ports {
					if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
						continue
					}
					if sp := servicePort(svc, p.Name); sp != nil && !hasPort(w.Ports, int(sp.Port)) {
						w.Ports = append(w.Ports, resources.WorkloadPort{Port: int(sp.Port), TargetPort: int(*p.Port), Protocol: protocolOf(sp.AppProtocol)})
					}
				}
			}
		}
	}
	var out []store.Resource
	for name, w := range specs {
		if len(w.Ports) == 0 {
			continue
		}
		sort.Slice(w.Ports, func(i, j int) bool { return w.Ports[i].Port < w.Ports[j].Port })
		var labels map[string]string
		if o := owners[name]; o != "" && len(o) <= 63 { // a label value's limit
			labels = map[string]string{resources.WorkloadLabel: o}
		}
		// One Workload per endpoint and Service: a Pod may back several.
		out = append(out, object(resources.KindWorkload, svc.Namespace, name+"."+svc.Name, labels, *w))
	}
	return out
}

// podOf is the running Pod an endpoint names, if any.
func podOf(ep discoveryv1.Endpoint, ns string, podByName map[string]*corev1.Pod) *corev1.Pod {
	ref := ep.TargetRef
	if ref == nil || ref.Kind != "Pod" {
		return nil
	}
	if ref.Namespace != "" {
		ns = ref.Namespace
	}
	return podByName[ns+"/"+ref.Name]
}

func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName != "" {
		return p.Spec.ServiceAccountName
	}
	return "default"
}

// ownerOf is the workload a Pod belongs to: its Deployment (the
// ReplicaSet's name without the template hash), other controller, or itself.
func ownerOf(p *corev1.Pod) string {
	for _, o := range p.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if o.Kind == "ReplicaSet" {
			if h := p.Labels["pod-template-hash"]; h != "" {
				return strings.TrimSuffix(o.Name, "-"+h)
			}
		}
		return o.Name
	}
	return p.Name
}

func servicePort(svc *corev1.Service, name *string) *corev1.ServicePort {
	for i := range svc.Spec.Ports {
		if (name == nil && svc.Spec.Ports[i].Name == "") || (name != nil && svc.Spec.Ports[i].Name == *name) {
			return &svc.Spec.Ports[i]
		}
	}
	return nil
}

func hasPort(ps []resources.WorkloadPort, port int) bool {
	for _, p := range ps {
		if p.Port == port {
			return true
		}
	}
	return false
}

// protocolOf maps a port's appProtocol to the store's protocols.
func protocolOf(app *string) string {
	if app == nil {
		return ""
	}
	switch strings.ToLower(*app) {
	case "http":
		return "http"
	case "kubernetes.io/h2c", "http2":
		return "http2"
	case "grpc":
		return "grpc"
	case "tcp", "opaque", "linkerd.io/opaque":
		return "opaque"
	}
	return ""
}

func object(kind, ns, name string, labels map[string]string, spec any) store.Resource {
	raw, _ := json.Marshal(spec)
	return store.Resource{APIVersion: resources.APIVersion, Kind: kind, Spec: raw,
		Metadata: store.Metadata{Name: name, Namespace: ns, Labels: labels, Annotations: map[string]string{SourceAnnotation: source}}}
}
