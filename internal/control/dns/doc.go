// Package dns is the control plane's DNS server for local mode.
//
// In local mode every application runs in its own network namespace, whose
// resolv.conf points at this server and searches the caller's namespace:
//
//	nameserver 10.239.0.1
//	search default.svc.cluster.local svc.cluster.local cluster.local
//	options ndots:5
//
// so an application can dial a service as "emoji", "emoji.default",
// "emoji.default.svc" or "emoji.default.svc.cluster.local", the same names
// it would use in a Kubernetes cluster. The resolver's search list turns all
// of them into queries for <service>.<namespace>.svc.<domain>. The server
// answers only those:
//
//   - <service>.<namespace>.svc.<domain>. of a known service: its virtual IP
//     (an A record, or AAAA for an IPv6 address); other query types get an
//     empty answer (NODATA).
//   - any other name within <domain>., including names in the svc zone with
//     the wrong number of labels, and unknown services: NXDOMAIN.
//   - names outside <domain>.: REFUSED. The namespace has no other DNS
//     server and this one does not recurse, so applications fail fast
//     instead of waiting for timeouts.
//
// Negative and empty answers carry the SOA record of <domain>. with the
// answer TTL as the negative-caching TTL, so a service that appears is
// found within one TTL. Answers are authoritative (AA set, RA clear).
//
// The server speaks UDP and TCP, understands a minimal EDNS0 (the client's
// UDP payload size is honoured and an OPT record is echoed) and is built on
// golang.org/x/net/dns/dnsmessage alone.
package dns
