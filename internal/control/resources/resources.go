// Package resources defines the resource kinds kept in the store —
// Trellis's Service and Workload, the Gateway API's HTTPRoute and
// GRPCRoute (GAMMA: attached to a Service), and the policy kinds (Server,
// AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication,
// HTTPLocalRateLimitPolicy, EgressNetwork) — and checks them before
// anything is written: every error names the field at fault.
package resources

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/trellis-mesh/trellis/internal/control/store"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// APIVersion is the group and version of every Trellis kind.
const APIVersion = "trellis.dev/v1alpha1"

// The kinds.
const (
	KindService  = "Service"
	KindWorkload = "Workload"
)

// WorkloadLabel names, on a Workload, the workload it is an instance of
// (what `trellis run --name` started); the instance is the Workload's name.
const WorkloadLabel = "trellis.dev/workload"

// AppUserLabel and AppUIDLabel name, on a Workload `trellis run` started,
// the user its application runs as.
const (
	AppUserLabel = "trellis.dev/app-user"
	AppUIDLabel  = "trellis.dev/app-uid"
)

// RestartsLabel and LastExitLabel say, on a Workload `trellis run`
// restarted, how often and how its replica last ended (exit-N, signal-X).
const (
	RestartsLabel = "trellis.dev/restarts"
	LastExitLabel = "trellis.dev/last-exit"
)

// CreatedByAnnotation marks a Service the mesh created for its instances —
// a registration (value "registry") or `trellis run` ("trellis-run") —
// rather than one applied by hand. Such a Service is collected, and its
// virtual IP freed, once it has had no workload for a while; applying it
// by hand (without the annotation) keeps it for good.
const CreatedByAnnotation = "trellis.dev/created-by"

// WorkloadOf is the workload a Workload object is an instance of: its
// WorkloadLabel, else (an instance applied by hand) its own name.
func WorkloadOf(m store.Metadata) string {
	if w := m.Labels[WorkloadLabel]; w != "" {
		return w
	}
	return m.Name
}

// Protocols a port may declare; "" detects.
var protocols = map[string]bool{"": true, "http": true, "http2": true, "grpc": true, "tcp": true, "opaque": true}

// ServiceSpec is a logical service: the ports it serves and its virtual IP,
// which applications in transparent mode dial.
type ServiceSpec struct {
	Ports []ServicePort `json:"ports"`
	// ClusterIP is allocated by the control plane when empty.
	ClusterIP string `json:"clusterIP,omitempty"`
	// ServiceAccounts are the identities (service accounts of the
	// service's namespace) that may serve it: a proxy registering under
	// any other is refused. A registration that creates the service binds
	// it to the registering identity; `trellis run` binds its own.
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
}

// Serves reports whether service account sa may serve the service.
func (s ServiceSpec) Serves(sa string) bool { return slices.Contains(s.ServiceAccounts, sa) }

// ServicePort is one port of a service.
type ServicePort struct {
	Name     string `json:"name,omitempty"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol,omitempty"`
}

// WorkloadSpec is one registered instance of a service.
type WorkloadSpec struct {
	Service string `json:"service"`
	// Identity is the SPIFFE ID of the proxy in front of the instance;
	// empty for an instance without one (reached in plaintext).
	Identity string         `json:"identity"`
	Address  string         `json:"address"`
	Ports    []WorkloadPort `json:"ports"`
	// MeshPort is the instance proxy's inbound port (mTLS from peers).
	MeshPort int `json:"meshPort"`
	// AdminPort is the instance proxy's admin port (/metrics, /ready).
	AdminPort int `json:"adminPort,omitempty"`
	// TapPort is the instance proxy's tap port (live requests, over mTLS).
	TapPort int `json:"tapPort,omitempty"`
}

// WorkloadPort maps a service port to the port the instance listens on.
type WorkloadPort struct {
	// Name, if set, names the instance's port: a Server may select it by
	// the name.
	Name       string `json:"name,omitempty"`
	Port       int    `json:"port"`
	TargetPort int    `json:"targetPort"`
	Protocol   string `json:"protocol,omitempty"`
}

// Kinds is the store.Kinds of Trellis.
type Kinds struct{}

// kinds are the known kinds: their apiVersion and check.
var kinds = map[string]struct {
	apiVersion string
	check      func(*store.Resource) error
}{
	KindService:   {APIVersion, checkService},
	KindWorkload:  {APIVersion, checkWorkload},
	KindHTTPRoute: {GatewayAPIVersion, checkHTTPRoute},
	KindGRPCRoute: {GatewayAPIVersion, checkGRPCRoute},

	KindServer:                   {PolicyAPIVersion, checkServer},
	KindAuthorizationPolicy:      {PolicyAPIVersion, checkAuthorizationPolicy},
	KindMeshTLSAuthentication:    {PolicyAPIVersion, checkMeshTLSAuthentication},
	KindNetworkAuthentication:    {PolicyAPIVersion, checkNetworkAuthentication},
	KindHTTPLocalRateLimitPolicy: {PolicyAPIVersion, checkHTTPLocalRateLimitPolicy},
	KindEgressNetwork:            {PolicyAPIVersion, checkEgressNetwork},
}

// Namespaced reports whether kind lives in a namespace: every known kind does.
func (Kinds) Namespaced(kind string) bool { _, ok := kinds[kind]; return ok }

// Known reports whether kind is one of the store's.
func (Kinds) Known(kind string) bool { _, ok := kinds[kind]; return ok }

// Check validates r's apiVersion and spec.
func (Kinds) Check(r *store.Resource) error {
	k, ok := kinds[r.Kind]
	if !ok {
		known := slices.Sorted(maps.Keys(kinds))
		return &store.ValidationError{Field: "kind", Reason: fmt.Sprintf("unknown kind %q (known: %s)", r.Kind, strings.Join(known, ", "))}
	}
	if r.APIVersion != k.apiVersion {
		return &store.ValidationError{Field: "apiVersion", Reason: fmt.Sprintf("%q: %s is %s", r.APIVersion, r.Kind, k.apiVersion)}
	}
	return k.check(r)
}

// Decode strictly decodes a resource's spec into v: unknown fields are errors.
func Decode(spec json.RawMessage, v any) error {
	if len(spec) == 0 {
		return &store.ValidationError{Field: "spec", Reason: "required"}
	}
	d := json.NewDecoder(bytes.NewReader(spec))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return &store.ValidationError{Field: "spec", Reason: strings.TrimPrefix(err.Error(), "json: ")}
	}
	return nil
}

func checkService(r *store.Resource) error {
	var s ServiceSpec
	if err := Decode(r.Spec, &s); err != nil {
		return err
	}
	if len(s.Ports) == 0 {
		return invalid("spec.ports", "at least one port is required")
	}
	seen := map[int]bool{}
	for i, p := range s.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if err := checkPort(f+".port", p.Port); err != nil {
			return err
		}
		if seen[p.Port] {
			return invalid(f+".port", fmt.Sprintf("%d is listed twice", p.Port))
		}
		seen[p.Port] = true
		if !protocols[p.Protocol] {
			return invalid(f+".protocol", fmt.Sprintf("%q: must be http, http2, grpc, tcp or opaque", p.Protocol))
		}
	}
	if s.ClusterIP != "" {
		if a, err := netip.ParseAddr(s.ClusterIP); err != nil || !a.Is4() {
			return invalid("spec.clusterIP", fmt.Sprintf("%q is not an IPv4 address", s.ClusterIP))
		}
	}
	for i, sa := range s.ServiceAccounts {
		f := fmt.Sprintf("spec.serviceAccounts[%d]", i)
		if err := meshid.CheckServiceAccount(sa); err != nil {
			return invalid(f, fmt.Sprintf("%q: %v", sa, err))
		}
		if slices.Index(s.ServiceAccounts, sa) < i {
			return invalid(f, fmt.Sprintf("%q is listed twice", sa))
		}
	}
	return nil
}

func checkWorkload(r *store.Resource) error {
	var w WorkloadSpec
	if err := Decode(r.Spec, &w); err != nil {
		return err
	}
	// A workload without a service (and so without ports) is a client
	// only: it is known by its identity and address, and sent nothing.
	if w.Service == "" && len(w.Ports) > 0 {
		return invalid("spec.service", "required with ports")
	}
	if w.Identity != "" { // none: an endpoint without a proxy, reached in plaintext
		id, err := meshid.Parse(w.Identity)
		if err != nil {
			return invalid("spec.identity", err.Error())
		}
		if id.Namespace != r.Metadata.Namespace {
			return invalid("spec.identity", fmt.Sprintf("namespace %q differs from the workload's %q", id.Namespace, r.Metadata.Namespace))
		}
	}
	if _, err := netip.ParseAddr(w.Address); err != nil {
		return invalid("spec.address", fmt.Sprintf("%q is not an IP address", w.Address))
	}
	if w.Service != "" && len(w.Ports) == 0 {
		return invalid("spec.ports", "at least one port is required")
	}
	for i, p := range w.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if err := checkPort(f+".port", p.Port); err != nil {
			return err
		}
		if err := checkPort(f+".targetPort", p.TargetPort); err != nil {
			return err
		}
		if !protocols[p.Protocol] {
			return invalid(f+".protocol", fmt.Sprintf("%q: must be http, http2, grpc, tcp or opaque", p.Protocol))
		}
	}
	switch {
	case w.Identity == "" && w.MeshPort != 0:
		return invalid("spec.meshPort", "an instance without an identity has no proxy to reach")
	case w.Identity != "":
		if err := checkPort("spec.meshPort", w.MeshPort); err != nil {
			return err
		}
	}
	if w.AdminPort != 0 {
		if err := checkPort("spec.adminPort", w.AdminPort); err != nil {
			return err
		}
	}
	if w.TapPort != 0 {
		return checkPort("spec.tapPort", w.TapPort)
	}
	return nil
}

func checkPort(field string, p int) error {
	if p < 1 || p > 65535 {
		return invalid(field, fmt.Sprintf("%d: must be between 1 and 65535", p))
	}
	return nil
}

func invalid(field, reason string) error { return &store.ValidationError{Field: field, Reason: reason} }
