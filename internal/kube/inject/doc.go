// Package inject adds the Trellis proxy to Kubernetes Pods, for the
// mutating admission webhook (trellis-control injector) and for manifests
// on disk (trellis inject / uninject) alike.
//
// A Pod gets two init containers in front of its own:
//
//   - trellis-init runs `trellis-proxy init` once, with NET_ADMIN and
//     NET_RAW and nothing else, to redirect the Pod's TCP through the proxy
//     (the proxy's own user, 2102, is exempt, so it never loops);
//   - trellis-proxy is a native sidecar (an init container with
//     restartPolicy Always): it starts before the application containers,
//     is ready once it holds its certificate, keeps running beside them and
//     is stopped after them, so Jobs complete. It runs as UID 2102, non-root,
//     with a read-only root filesystem and no capabilities.
//
// The proxy proves its identity with a projected ServiceAccount token
// (audience identity.trellis.dev) and gets spiffe://<trust domain>/ns/<ns>/sa/<sa>.
// What to inject is decided by the annotation trellis.dev/inject (enabled
// or disabled) on the Pod, else on its namespace; config.trellis.dev/*
// annotations tune it (see the Annotation constants). Injection is
// idempotent and Uninject removes exactly what it added.
package inject
