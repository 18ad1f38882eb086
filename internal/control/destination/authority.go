package destination

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// target is what an authority names: a service by name, or a virtual IP,
// and a port.
type target struct {
	name, namespace string
	ip              netip.Addr // valid when the authority is an IP
	port            int
}

// parseAuthority reads "host:port" where host is a service's virtual IP,
// "name.namespace.svc.<domain>", "name.namespace.svc", "name.namespace" or
// "name" (in contextNS, or "default"). Names of other shapes are returned
// as they are and simply match no service.
func parseAuthority(authority, contextNS, domain string) (target, error) {
	host, portStr, err := net.SplitHostPort(authority)
	if err != nil {
		return target{}, fmt.Errorf("authority %q: want host:port", authority)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return target{}, fmt.Errorf("authority %q: invalid port", authority)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return target{ip: ip.Unmap(), port: port}, nil
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" {
		return target{}, fmt.Errorf("authority %q: empty host", authority)
	}
	host = strings.TrimSuffix(host, ".svc."+domain)
	host = strings.TrimSuffix(host, ".svc")
	name, ns, qualified := strings.Cut(host, ".")
	if !qualified {
		ns = contextNS
		if ns == "" {
			ns = "default"
		}
	}
	return target{name: name, namespace: ns, port: port}, nil
}
