package inject

import (
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// tcpProbePrefix is the proxy admin path a TCP probe of an application
// port becomes: /probe/tcp/PORT.
const tcpProbePrefix = "/probe/tcp/"

// probeFields are a container's probes, by their JSON names.
func probeFields(c *corev1.Container) []struct {
	name  string
	probe *corev1.Probe
} {
	return []struct {
		name  string
		probe *corev1.Probe
	}{{"startupProbe", c.StartupProbe}, {"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}}
}

// tcpProbes rewrites the application containers' TCP probes. The kubelet
// connects to the Pod's IP, which the proxy intercepts: the connection
// opens whether or not the application listens, so a Pod would turn Ready
// (and receive traffic) before its application could answer. Each such
// probe becomes an HTTP probe of the proxy's admin port,
// /probe/tcp/PORT, where the proxy itself connects to the application
// (see --tcp-probe-ports). Probes of another host are left alone. It
// returns the operations and the ports, comma-separated.
func tcpProbes(pod *corev1.Pod) ([]Op, string) {
	var ops []Op
	var ports []string
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, f := range probeFields(c) {
			if f.probe == nil || f.probe.TCPSocket == nil || f.probe.TCPSocket.Host != "" {
				continue
			}
			port := containerPort(c, f.probe.TCPSocket.Port)
			if port == 0 {
				continue
			}
			p := strconv.Itoa(int(port))
			path := tcpProbePrefix + p
			if f.probe.TCPSocket.Port.Type == intstr.String { // kept for uninject
				path += "?name=" + url.QueryEscape(f.probe.TCPSocket.Port.StrVal)
			}
			base := "/spec/containers/" + strconv.Itoa(i) + "/" + f.name
			ops = append(ops, Op{Op: "remove", Path: base + "/tcpSocket"},
				Op{Op: "add", Path: base + "/httpGet", Value: map[string]any{"path": path, "port": AdminPort}})
			if !slices.Contains(ports, p) {
				ports = append(ports, p)
			}
		}
	}
	return ops, strings.Join(ports, ",")
}

// untcpProbes turns the probes tcpProbes rewrote back into TCP probes.
func untcpProbes(pod *corev1.Pod) []Op {
	var ops []Op
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, f := range probeFields(c) {
			if f.probe == nil || f.probe.HTTPGet == nil || f.probe.HTTPGet.Port != intstr.FromInt32(AdminPort) ||
				!strings.HasPrefix(f.probe.HTTPGet.Path, tcpProbePrefix) {
				continue
			}
			u, err := url.Parse(f.probe.HTTPGet.Path)
			if err != nil {
				continue
			}
			var port any
			if name := u.Query().Get("name"); name != "" {
				port = name
			} else if port, err = strconv.ParseUint(strings.TrimPrefix(u.Path, tcpProbePrefix), 10, 16); err != nil {
				continue
			}
			base := "/spec/containers/" + strconv.Itoa(i) + "/" + f.name
			ops = append(ops, Op{Op: "remove", Path: base + "/httpGet"}, Op{Op: "add", Path: base + "/tcpSocket", Value: map[string]any{"port": port}})
		}
	}
	return ops
}

// containerPort resolves a probe's port, a number or the name of one of
// c's ports; 0 when it names none.
func containerPort(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}
