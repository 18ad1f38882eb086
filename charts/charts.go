// Package charts embeds Trellis's Helm charts: trellis-crds (the
// CustomResourceDefinitions Kubernetes mode reads) and
// trellis-control-plane (identity, destination and the proxy injector).
// `trellis install` renders them with Helm's chart engine, so the CLI and
// `helm install ./charts/...` produce the same manifests.
package charts

import "embed"

// FS holds both charts, each under its directory name.
//
//go:embed all:trellis-crds all:trellis-control-plane
var FS embed.FS

// The charts' names, which are their directories in FS.
const (
	CRDs         = "trellis-crds"
	ControlPlane = "trellis-control-plane"
)
