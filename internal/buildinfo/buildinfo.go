// Package buildinfo carries the version of the running Trellis binary.
package buildinfo

import "runtime/debug"

// Version is set at link time with -ldflags "-X github.com/trellis-mesh/trellis/internal/buildinfo.Version=v1.2.3".
// When it is empty the module version recorded by the Go toolchain is used.
var Version = ""

// String returns the version, falling back to the VCS revision the binary was built from.
func String() string {
	if Version != "" {
		return Version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "dev-" + s.Value[:12]
		}
	}
	return "dev"
}
