// Package e2e holds the end-to-end acceptance tests of the proxy core: real
// trellis-proxy processes, real sockets and real clients (curl, grpc-go,
// gorilla/websocket, raw TCP), on the path
//
//	client → outbound proxy (A) → inbound proxy (B) → server
//
// Every test runs twice, as the subtests "explicit" and "transparent":
//
//   - explicit: A and B are processes on 127.0.0.1. A listens on one
//     --upstream port per backend and sends it to that backend's B; each B
//     forwards everything to its --app-addr. Clients dial A's upstream port.
//   - transparent: two network namespaces joined by a veth pair, each set up
//     with `trellis-proxy init` (iptables REDIRECT) and running a proxy as
//     UID 2102. Clients in namespace A dial the server's real address in
//     namespace B and are intercepted on both sides. After each test
//     `init --cleanup` must leave the nat table exactly as it was. This mode
//     needs root, ip(8) and iptables; without them it is skipped.
//
// Clients and servers live in the test process; in transparent mode their
// sockets are created inside the namespaces (see InNetNS). Each test also
// checks on the proxies' /metrics that its traffic really crossed both A and
// B.
//
// TestMain builds cmd/trellis-proxy once; set TRELLIS_E2E_PROXY_BIN to test a
// binary built elsewhere instead. Run with:
//
//	go test -race -count=1 ./test/e2e/
package e2e
