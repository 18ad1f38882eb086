package inject

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/iptables"
)

// Annotations read from Pods and namespaces.
const (
	// AnnotationInject is "enabled" or "disabled"; the Pod's wins over its
	// namespace's.
	AnnotationInject = "trellis.dev/inject"
	// Enabled is the value of AnnotationInject that asks for the proxy.
	Enabled = "enabled"
	// AnnotationProxyVersion marks an injected Pod with the proxy's version.
	AnnotationProxyVersion = "trellis.dev/proxy-version"

	AnnotationOpaquePorts       = "config.trellis.dev/opaque-ports"
	AnnotationSkipInboundPorts  = "config.trellis.dev/skip-inbound-ports"
	AnnotationSkipOutboundPorts = "config.trellis.dev/skip-outbound-ports"
	AnnotationSkipSubnets       = "config.trellis.dev/skip-subnets"
	AnnotationLogLevel          = "config.trellis.dev/proxy-log-level"
	AnnotationCPURequest        = "config.trellis.dev/proxy-cpu-request"
	AnnotationCPULimit          = "config.trellis.dev/proxy-cpu-limit"
	AnnotationMemoryRequest     = "config.trellis.dev/proxy-memory-request"
	AnnotationMemoryLimit       = "config.trellis.dev/proxy-memory-limit"
)

// Names of what Inject adds.
const (
	InitContainer  = "trellis-init"
	ProxyContainer = "trellis-proxy"
	TokenVolume    = "trellis-identity-token"
	tokenDir       = "/var/run/secrets/trellis.dev/identity"
	tokenFile      = "token"
	// TokenAudience is the audience of the projected token the proxy
	// presents; the identity service accepts no other.
	TokenAudience = meshid.TokenAudience
)

// The proxy's ports in a Pod.
const (
	InboundPort  = iptables.DefaultInboundPort
	OutboundPort = iptables.DefaultOutboundPort
	AdminPort    = 4191
	TapPort      = 4190
	ProxyUID     = iptables.DefaultProxyUID
)

// Config is what every injected proxy is told about the mesh.
type Config struct {
	// ProxyImage runs both the init container and the proxy.
	ProxyImage      string
	ImagePullPolicy corev1.PullPolicy
	// Version is the proxy's version, recorded on the Pod.
	Version       string
	TrustDomain   string
	ClusterDomain string
	// TrustAnchorsPEM is the mesh's trust anchor bundle, given to every
	// proxy (a Pod cannot mount a ConfigMap of the control plane's
	// namespace).
	TrustAnchorsPEM string
	// IdentityAddr and DestinationAddr are the control plane's services
	// (host:port).
	IdentityAddr    string
	DestinationAddr string
	// LogLevel is the proxies' default log level.
	LogLevel string
	// Resources are the proxy container's default requests and limits.
	Resources corev1.ResourceRequirements
}

// Validate names the first missing setting.
func (c Config) Validate() error {
	for name, v := range map[string]string{"proxy image": c.ProxyImage, "trust domain": c.TrustDomain, "cluster domain": c.ClusterDomain,
		"trust anchors": c.TrustAnchorsPEM, "identity address": c.IdentityAddr, "destination address": c.DestinationAddr} {
		if v == "" {
			return fmt.Errorf("inject: %s is not set", name)
		}
	}
	return nil
}

// Wanted reports whether pod, in a namespace with annotations nsAnnotations,
// is to be injected: the Pod's trellis.dev/inject wins over its
// namespace's; Pods on the host network never are.
func Wanted(pod *corev1.Pod, nsAnnotations map[string]string) bool {
	if pod.Spec.HostNetwork {
		return false
	}
	if v, ok := pod.Annotations[AnnotationInject]; ok {
		return v == Enabled
	}
	return nsAnnotations[AnnotationInject] == Enabled
}

// Injected reports whether pod already has the proxy.
func Injected(pod *corev1.Pod) bool {
	return slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == ProxyContainer }) ||
		slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == ProxyContainer })
}

// Patch is the JSON Patch that adds the proxy to pod: two init containers
// in front of its own, the token volume and the version annotation, and
// the application's TCP probes made HTTP probes of the proxy (see
// tcpProbes). Its annotations are validated first; an error names the one
// at fault. A Pod that already has the proxy gets no operations. Apart from
// those probes, the operations insert and append, so nothing of the Pod's
// own is rewritten.
func (c Config) Patch(pod *corev1.Pod) ([]Op, error) {
	if Injected(pod) {
		return nil, nil
	}
	a, err := readAnnotations(pod.Annotations, c)
	if err != nil {
		return nil, err
	}
	probeOps, probePorts := tcpProbes(pod)
	a.tcpProbePorts = probePorts
	initC, proxy := asJSON(c.initContainer(a)), asJSON(c.proxyContainer(a))
	vol := asJSON(corev1.Volume{Name: TokenVolume, VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: TokenAudience, ExpirationSeconds: ptr.To[int64](3600), Path: tokenFile}}}}}})
	var ops []Op
	if len(pod.Spec.InitContainers) == 0 {
		ops = append(ops, Op{Op: "add", Path: "/spec/initContainers", Value: []any{initC, proxy}})
	} else {
		ops = append(ops, Op{Op: "add", Path: "/spec/initContainers/0", Value: initC}, Op{Op: "add", Path: "/spec/initContainers/1", Value: proxy})
	}
	if len(pod.Spec.Volumes) == 0 {
		ops = append(ops, Op{Op: "add", Path: "/spec/volumes", Value: []any{vol}})
	} else {
		ops = append(ops, Op{Op: "add", Path: "/spec/volumes/-", Value: vol})
	}
	if len(pod.Annotations) == 0 { // an empty map is not in the Pod's JSON
		ops = append(ops, Op{Op: "add", Path: "/metadata/annotations", Value: map[string]any{AnnotationProxyVersion: c.Version}})
	} else {
		ops = append(ops, Op{Op: "add", Path: "/metadata/annotations/" + escape(AnnotationProxyVersion), Value: c.Version})
	}
	return append(ops, probeOps...), nil
}

// UninjectPatch is the JSON Patch that removes from pod what Patch added;
// a list or map left empty goes too, as it was before injection, and TCP
// probes are TCP probes again.
func UninjectPatch(pod *corev1.Pod) []Op {
	ops := untcpProbes(pod)
	remove := func(path string, n int, mine func(i int) bool) {
		var idx []int
		for i := n - 1; i >= 0; i-- {
			if mine(i) {
				idx = append(idx, i)
			}
		}
		if len(idx) > 0 && len(idx) == n {
			ops = append(ops, Op{Op: "remove", Path: path})
			return
		}
		for _, i := range idx {
			ops = append(ops, Op{Op: "remove", Path: path + "/" + strconv.Itoa(i)})
		}
	}
	ours := func(cs []corev1.Container) func(int) bool {
		return func(i int) bool { return cs[i].Name == InitContainer || cs[i].Name == ProxyContainer }
	}
	s := pod.Spec
	remove("/spec/initContainers", len(s.InitContainers), ours(s.InitContainers))
	remove("/spec/containers", len(s.Containers), ours(s.Containers)) // an old-style sidecar
	remove("/spec/volumes", len(s.Volumes), func(i int) bool { return s.Volumes[i].Name == TokenVolume })
	if _, ok := pod.Annotations[AnnotationProxyVersion]; ok {
		if len(pod.Annotations) == 1 {
			ops = append(ops, Op{Op: "remove", Path: "/metadata/annotations"})
		} else {
			ops = append(ops, Op{Op: "remove", Path: "/metadata/annotations/" + escape(AnnotationProxyVersion)})
		}
	}
	return ops
}

// settings are a Pod's config.trellis.dev annotations, validated.
type settings struct {
	rules         iptables.Config
	opaque        string
	logLevel      string
	resources     corev1.ResourceRequirements
	tcpProbePorts string // the application's, comma-separated
}

func readAnnotations(ann map[string]string, c Config) (settings, error) {
	s := settings{rules: iptables.DefaultConfig(), logLevel: c.LogLevel, resources: *c.Resources.DeepCopy()}
	if s.logLevel == "" {
		s.logLevel = "info"
	}
	list := func(key string) []string {
		if v := strings.TrimSpace(ann[key]); v != "" {
			return strings.Split(strings.ReplaceAll(v, " ", ""), ",")
		}
		return nil
	}
	// The proxy's own admin and tap ports are reached directly (probes,
	// metrics scrapes, the control plane's tap).
	s.rules.SkipInboundPorts = append([]string{strconv.Itoa(AdminPort), strconv.Itoa(TapPort)}, list(AnnotationSkipInboundPorts)...)
	s.rules.SkipOutboundPorts = list(AnnotationSkipOutboundPorts)
	s.rules.SkipSubnets = list(AnnotationSkipSubnets)
	if err := s.rules.Validate(); err != nil {
		return settings{}, fmt.Errorf("annotations %s, %s, %s: %w", AnnotationSkipInboundPorts, AnnotationSkipOutboundPorts, AnnotationSkipSubnets, err)
	}
	for _, p := range list(AnnotationOpaquePorts) {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return settings{}, fmt.Errorf("annotation %s: %q is not a port", AnnotationOpaquePorts, p)
		}
	}
	s.opaque = strings.Join(list(AnnotationOpaquePorts), ",")
	if v, ok := ann[AnnotationLogLevel]; ok {
		if !slices.Contains([]string{"debug", "info", "warn", "error"}, v) {
			return settings{}, fmt.Errorf("annotation %s: %q: must be debug, info, warn or error", AnnotationLogLevel, v)
		}
		s.logLevel = v
	}
	for _, q := range []struct {
		key  string
		name corev1.ResourceName
		into *corev1.ResourceList
	}{
		{AnnotationCPURequest, corev1.ResourceCPU, &s.resources.Requests}, {AnnotationMemoryRequest, corev1.ResourceMemory, &s.resources.Requests},
		{AnnotationCPULimit, corev1.ResourceCPU, &s.resources.Limits}, {AnnotationMemoryLimit, corev1.ResourceMemory, &s.resources.Limits},
	} {
		v, ok := ann[q.key]
		if !ok {
			continue
		}
		qty, err := resource.ParseQuantity(v)
		if err != nil {
			return settings{}, fmt.Errorf("annotation %s: %q: %w", q.key, v, err)
		}
		if *q.into == nil {
			*q.into = corev1.ResourceList{}
		}
		(*q.into)[q.name] = qty
	}
	for name, req := range s.resources.Requests {
		if lim, ok := s.resources.Limits[name]; ok && req.Cmp(lim) > 0 {
			return settings{}, errors.New("proxy " + string(name) + " request " + req.String() + " is above its limit " + lim.String())
		}
	}
	return s, nil
}

func (c Config) initContainer(s settings) corev1.Container {
	args := []string{"init", "--inbound-port=" + strconv.Itoa(s.rules.InboundPort), "--outbound-port=" + strconv.Itoa(s.rules.OutboundPort),
		"--proxy-uid=" + strconv.Itoa(s.rules.ProxyUID), "--skip-inbound-ports=" + strings.Join(s.rules.SkipInboundPorts, ",")}
	if len(s.rules.SkipOutboundPorts) > 0 {
		args = append(args, "--skip-outbound-ports="+strings.Join(s.rules.SkipOutboundPorts, ","))
	}
	if len(s.rules.SkipSubnets) > 0 {
		args = append(args, "--skip-subnets="+strings.Join(s.rules.SkipSubnets, ","))
	}
	return corev1.Container{
		Name: InitContainer, Image: c.ProxyImage, ImagePullPolicy: c.ImagePullPolicy, Args: args,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr.To[int64](0), RunAsNonRoot: ptr.To(false), AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

func (c Config) proxyContainer(s settings) corev1.Container {
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	args := []string{
		"--inbound-addr=0.0.0.0:" + strconv.Itoa(InboundPort), "--outbound-addr=127.0.0.1:" + strconv.Itoa(OutboundPort),
		"--admin-addr=0.0.0.0:" + strconv.Itoa(AdminPort), "--tap-addr=0.0.0.0:" + strconv.Itoa(TapPort),
		"--identity=spiffe://" + c.TrustDomain + "/ns/$(TRELLIS_POD_NAMESPACE)/sa/$(TRELLIS_POD_SERVICE_ACCOUNT)",
		"--identity-addr=" + c.IdentityAddr, "--identity-token-file=" + tokenDir + "/" + tokenFile,
		"--destination-addr=" + c.DestinationAddr,
		"--cluster-domain=" + c.ClusterDomain, "--log-level=" + s.logLevel,
	}
	if s.opaque != "" {
		args = append(args, "--opaque-ports="+s.opaque)
	}
	if s.tcpProbePorts != "" {
		args = append(args, "--tcp-probe-ports="+s.tcpProbePorts)
	}
	probe := func(path string, failures int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(AdminPort)}},
			PeriodSeconds: 1, FailureThreshold: failures, TimeoutSeconds: 1}
	}
	return corev1.Container{
		Name: ProxyContainer, Image: c.ProxyImage, ImagePullPolicy: c.ImagePullPolicy, Args: args,
		// A native sidecar: started before the application, stopped after.
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Env: []corev1.EnvVar{
			{Name: "TRELLIS_POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
			{Name: "TRELLIS_POD_SERVICE_ACCOUNT", ValueFrom: field("spec.serviceAccountName")},
			{Name: "TRELLIS_PROXY_TRUST_ANCHORS_PEM", Value: c.TrustAnchorsPEM}, // --trust-anchors-pem
		},
		Ports: []corev1.ContainerPort{
			{Name: "trellis-proxy", ContainerPort: InboundPort}, {Name: "trellis-admin", ContainerPort: AdminPort}, {Name: "trellis-tap", ContainerPort: TapPort},
		},
		// The application starts once the proxy holds its certificate.
		StartupProbe:   probe("/ready", 120),
		ReadinessProbe: probe("/ready", 3),
		LivenessProbe:  probe("/live", 10),
		Resources:      s.resources,
		VolumeMounts:   []corev1.VolumeMount{{Name: TokenVolume, MountPath: tokenDir, ReadOnly: true}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr.To[int64](ProxyUID), RunAsGroup: ptr.To[int64](ProxyUID), RunAsNonRoot: ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}
