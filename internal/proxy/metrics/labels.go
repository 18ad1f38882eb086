package metrics

import (
	"sort"
	"strings"
)

// Labels identify a stream of traffic: which side of the proxy, where it went
// and how it was secured. Unset fields are omitted from the output.
type Labels struct {
	Direction   string // "inbound" or "outbound"
	Authority   string // HTTP authority (outbound only)
	TargetAddr  string // host:port the proxy connected or was connecting to
	TLS         string // "true", "no_identity", "disabled", "opaque"
	NoTLSReason string
	ClientID    string // peer identity on the accepting side
	ServerID    string // peer identity on the connecting side
	SNI         string // ClientHello server name of opaque TLS
	RouteName   string // "namespace/name" of the matched HTTPRoute or GRPCRoute (outbound)
	RouteKind   string
	// Dst is the destination's labels (dst_service, dst_namespace,
	// dst_workload, dst_instance), rendered once by RenderDst.
	Dst string
}

// RenderDst renders a destination's metric labels for Labels.Dst, sorted
// by name so equal sets compare equal.
func RenderDst(labels ...map[string]string) string {
	merged := map[string]string{}
	for _, l := range labels {
		for k, v := range l {
			if v != "" {
				merged[k] = v
			}
		}
	}
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = kv(k, merged[k])
	}
	return join(parts...)
}

// render writes the labels as `k="v",k="v"` (no braces).
func (l Labels) render() string {
	var b strings.Builder
	add := func(k, v string) {
		if v == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteString(`="`)
		b.WriteString(escape(v))
		b.WriteByte('"')
	}
	add("direction", l.Direction)
	add("authority", l.Authority)
	add("target_addr", l.TargetAddr)
	add("tls", l.TLS)
	add("no_tls_reason", l.NoTLSReason)
	add("client_id", l.ClientID)
	add("server_id", l.ServerID)
	add("sni", l.SNI)
	add("route_name", l.RouteName)
	add("route_kind", l.RouteKind)
	if l.Dst != "" {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Dst)
	}
	return b.String()
}

// escape applies the text format's label value escaping.
func escape(v string) string {
	if !strings.ContainsAny(v, "\\\"\n") {
		return v
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return r.Replace(v)
}

func join(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		if p == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p)
	}
	return b.String()
}

func kv(k, v string) string { return k + `="` + escape(v) + `"` }
