package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// ControllerName is how Trellis signs the status it writes on routes.
const ControllerName gwapiv1.GatewayController = "trellis.dev/mesh"

// routeKinds are the Gateway API kinds mirrored, with their resource names.
var routeKinds = map[string]string{resources.KindHTTPRoute: "httproutes", resources.KindGRPCRoute: "grpcroutes"}

// route is one cluster route, as the store's kinds and the status it has.
type route struct {
	key        store.Key
	object     store.Resource
	parents    []gwapiv1.ParentReference
	backends   []gwapiv1.BackendRef
	status     *gwapiv1.RouteStatus
	namespace  string
	generation int64
}

// routeListers list the cluster's routes; nil when the Gateway API is not
// served (its CRDs are not installed).
type routeListers struct {
	http func(labels.Selector) ([]*gwapiv1.HTTPRoute, error)
	grpc func(labels.Selector) ([]*gwapiv1.GRPCRoute, error)
}

// gatewayServed reports whether the API server serves HTTPRoute and
// GRPCRoute (gateway.networking.k8s.io/v1).
func (m *Mirror) gatewayServed() bool {
	list, err := m.Client.Discovery().ServerResourcesForGroupVersion(gwapiv1.GroupVersion.String())
	if err != nil {
		return false
	}
	for _, want := range routeKinds {
		if !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == want }) {
			return false
		}
	}
	return true
}

// routes lists the cluster's routes as store objects: the route whole
// (its spec is the Gateway API's, which the store's route kinds are),
// marked as the mirror's.
func (l *routeListers) routes() ([]route, error) {
	if l == nil {
		return nil, nil
	}
	var out []route
	hs, err := l.http(labels.Everything())
	if err != nil {
		return nil, err
	}
	for _, r := range hs {
		backends := backendsOf(r.Spec.Rules, func(x gwapiv1.HTTPRouteRule) []gwapiv1.HTTPBackendRef { return x.BackendRefs },
			func(b gwapiv1.HTTPBackendRef) gwapiv1.BackendRef { return b.BackendRef })
		out = append(out, newRoute(resources.KindHTTPRoute, r.ObjectMeta, r.Spec, r.Spec.ParentRefs, backends, &r.Status.RouteStatus))
	}
	gs, err := l.grpc(labels.Everything())
	if err != nil {
		return nil, err
	}
	for _, r := range gs {
		backends := backendsOf(r.Spec.Rules, func(x gwapiv1.GRPCRouteRule) []gwapiv1.GRPCBackendRef { return x.BackendRefs },
			func(b gwapiv1.GRPCBackendRef) gwapiv1.BackendRef { return b.BackendRef })
		out = append(out, newRoute(resources.KindGRPCRoute, r.ObjectMeta, r.Spec, r.Spec.ParentRefs, backends, &r.Status.RouteStatus))
	}
	return out, nil
}

// backendsOf collects the backends of every rule of a route.
func backendsOf[R, B any](rules []R, refs func(R) []B, ref func(B) gwapiv1.BackendRef) []gwapiv1.BackendRef {
	var out []gwapiv1.BackendRef
	for _, rule := range rules {
		for _, b := range refs(rule) {
			out = append(out, ref(b))
		}
	}
	return out
}

func newRoute(kind string, om metav1.ObjectMeta, spec any, parents []gwapiv1.ParentReference, backends []gwapiv1.BackendRef, st *gwapiv1.RouteStatus) route {
	raw, _ := json.Marshal(spec)
	ann := map[string]string{SourceAnnotation: source}
	for k, v := range om.Annotations {
		if k != "kubectl.kubernetes.io/last-applied-configuration" {
			ann[k] = v
		}
	}
	return route{
		key: store.Key{Kind: kind, Namespace: om.Namespace, Name: om.Name},
		object: store.Resource{APIVersion: resources.GatewayAPIVersion, Kind: kind, Spec: raw,
			Metadata: store.Metadata{Name: om.Name, Namespace: om.Namespace, Labels: om.Labels, Annotations: ann}},
		parents: parents, backends: backends, status: st, namespace: om.Namespace, generation: om.Generation,
	}
}

// routeStatus is the status Trellis gives a route: per parent Service,
// Accepted (the store took it; else UnsupportedValue with why) and
// ResolvedRefs (every backend is a Service of the route's namespace that
// exists; else BackendNotFound, RefNotPermitted or InvalidKind). Parents
// that are not Services belong to other controllers and are left alone.
func routeStatus(r route, applyErr error, generation int64, serviceExists func(ns, name string) bool, now metav1.Time) []gwapiv1.RouteParentStatus {
	accepted := metav1.Condition{Type: string(gwapiv1.RouteConditionAccepted), Status: metav1.ConditionTrue,
		Reason: string(gwapiv1.RouteReasonAccepted), Message: "the mesh routes the parent Service's traffic by it"}
	if applyErr != nil {
		accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, string(gwapiv1.RouteReasonUnsupportedValue), applyErr.Error()
	}
	resolved := metav1.Condition{Type: string(gwapiv1.RouteConditionResolvedRefs), Status: metav1.ConditionTrue,
		Reason: string(gwapiv1.RouteReasonResolvedRefs), Message: "every backend is a Service that exists"}
	for _, b := range r.backends {
		ns := r.namespace
		if b.Namespace != nil {
			ns = string(*b.Namespace)
		}
		switch {
		case b.Kind != nil && *b.Kind != "Service" || b.Group != nil && *b.Group != "" && *b.Group != "core":
			resolved.Status, resolved.Reason, resolved.Message = metav1.ConditionFalse, string(gwapiv1.RouteReasonInvalidKind), "backend "+string(b.Name)+" is not a Service"
		case ns != r.namespace:
			resolved.Status, resolved.Reason, resolved.Message = metav1.ConditionFalse, string(gwapiv1.RouteReasonRefNotPermitted), "backend "+ns+"/"+string(b.Name)+" is in another namespace"
		case !serviceExists(ns, string(b.Name)):
			resolved.Status, resolved.Reason, resolved.Message = metav1.ConditionFalse, string(gwapiv1.RouteReasonBackendNotFound), "Service "+ns+"/"+string(b.Name)+" does not exist"
		default:
			continue
		}
		break
	}
	var out []gwapiv1.RouteParentStatus
	for _, p := range r.parents {
		if p.Kind == nil || *p.Kind != "Service" {
			continue
		}
		st := gwapiv1.RouteParentStatus{ParentRef: p, ControllerName: ControllerName}
		// Keep the transition times of conditions that did not change.
		for _, old := range r.status.Parents {
			if old.ControllerName == ControllerName && equalParent(old.ParentRef, p) {
				st.Conditions = old.Conditions
			}
		}
		for _, c := range []metav1.Condition{accepted, resolved} {
			c.ObservedGeneration, c.LastTransitionTime = generation, now
			meta.SetStatusCondition(&st.Conditions, c)
		}
		out = append(out, st)
	}
	return out
}

func equalParent(a, b gwapiv1.ParentReference) bool {
	aj, _ := json.Marshal(a)
	bj, _ := json.Marshal(b)
	return string(aj) == string(bj)
}

// mergeParents replaces Trellis's entries in a route's status with want,
// keeping other controllers'; it reports whether anything changed.
func mergeParents(st *gwapiv1.RouteStatus, want []gwapiv1.RouteParentStatus) bool {
	var others []gwapiv1.RouteParentStatus
	var mine []gwapiv1.RouteParentStatus
	for _, p := range st.Parents {
		if p.ControllerName == ControllerName {
			mine = append(mine, p)
		} else {
			others = append(others, p)
		}
	}
	a, _ := json.Marshal(mine)
	b, _ := json.Marshal(want)
	if string(a) == string(b) || len(mine) == 0 && len(want) == 0 {
		return false
	}
	st.Parents = append(others, want...)
	return true
}

// writeStatus writes the routes' status where it changed: judged on the
// informer's copy, then written on a fresh one.
func (m *Mirror) writeStatus(ctx context.Context, gw gwclient.Interface, rs []route, applied map[store.Key]error, serviceExists func(ns, name string) bool) error {
	var errs []error
	now := metav1.Now()
	for _, r := range rs {
		if !mergeParents(r.status.DeepCopy(), routeStatus(r, applied[r.key], r.generation, serviceExists, now)) {
			continue
		}
		var err error
		switch r.key.Kind {
		case resources.KindHTTPRoute:
			var cur *gwapiv1.HTTPRoute
			if cur, err = gw.GatewayV1().HTTPRoutes(r.key.Namespace).Get(ctx, r.key.Name, metav1.GetOptions{}); err == nil &&
				mergeParents(&cur.Status.RouteStatus, routeStatus(r, applied[r.key], cur.Generation, serviceExists, now)) {
				_, err = gw.GatewayV1().HTTPRoutes(r.key.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			}
		case resources.KindGRPCRoute:
			var cur *gwapiv1.GRPCRoute
			if cur, err = gw.GatewayV1().GRPCRoutes(r.key.Namespace).Get(ctx, r.key.Name, metav1.GetOptions{}); err == nil &&
				mergeParents(&cur.Status.RouteStatus, routeStatus(r, applied[r.key], cur.Generation, serviceExists, now)) {
				_, err = gw.GatewayV1().GRPCRoutes(r.key.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s/%s status: %w", r.key.Kind, r.key.Namespace, r.key.Name, err))
		}
	}
	return errors.Join(errs...)
}
