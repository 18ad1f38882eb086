// Package web is the dashboard: a live view of the mesh in a browser —
// overview, topology, a workload's charts and routes, live requests —
// served by the control plane from assets embedded in the binary. Its pages
// call the same read-only API the CLI uses (status, resources, metrics,
// tap), mounted beside them; nothing it serves changes the mesh. It answers
// only requests addressed to a host it serves (DNS-rebinding protection)
// and binds loopback unless told to expose itself.
package web
