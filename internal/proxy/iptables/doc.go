// Package iptables sets up transparent interception for the Trellis proxy:
// the nat-table rules that make every TCP connection into and out of a
// network namespace (a Kubernetes pod, or the namespace `trellis run`
// creates in local transparent mode) pass through the proxy, without the
// application knowing. `trellis-proxy init` calls Install; Cleanup undoes it.
//
// Two chains are added to the nat table, for IPv4 and, with Config.IPv6,
// for IPv6:
//
//	PREROUTING -> TRELLIS_INBOUND    (connections arriving from outside)
//	  -p tcp --dport <skip-inbound-port>  RETURN
//	  -p tcp  REDIRECT --to-ports 4143     (the proxy's inbound listener)
//
//	OUTPUT -> TRELLIS_OUTPUT         (connections opened from inside)
//	  -m owner --uid-owner 2102  RETURN    (the proxy itself)
//	  -o lo                      RETURN    (loopback)
//	  -p tcp --dport <skip-outbound-port>  RETURN
//	  -d <skip-subnet>           RETURN
//	  -p tcp  REDIRECT --to-ports 4140     (the proxy's outbound listener)
//
// REDIRECT rewrites the destination to the proxy's local port; the proxy
// recovers the address the client meant with the SO_ORIGINAL_DST socket
// option. Every rule carries a "trellis/..." comment so it is recognisable
// in iptables-save output.
//
// Why the two RETURNs at the top of TRELLIS_OUTPUT: the proxy's own
// outbound connections (to the real destination, after its routing
// decision) also pass through OUTPUT. Without the UID match they would be
// redirected back into the proxy forever; the proxy therefore runs as a
// dedicated user (ProxyUID) whose traffic is left alone. Traffic leaving
// through lo is left alone so the application can talk to itself, and to
// the proxy's own ports on localhost, directly. Only the first packet of a
// connection visits the nat table, so a connection redirected once is
// never re-evaluated.
//
// Rules are written with iptables-restore --noflush, one transaction per
// IP family, so a failure never leaves a family half-programmed; both
// iptables-nft and iptables-legacy are supported (Config.Mode). Commands run
// through a Runner so tests can check the exact restore input, and so they
// can run inside a named network namespace (ExecRunner.NetNS).
package iptables
