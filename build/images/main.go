// Command images builds Trellis's container images — trellis-proxy,
// trellis-control and trellis (the CLI, which also runs the demo
// application) — from this repository without Docker, as image tarballs:
//
//	go run ./build/images -o out/images [-registry localhost] [-version v0.1.0]
//	ctr -n k8s.io images import out/images/trellis-proxy.tar      # into containerd
//	crane push out/images/trellis-proxy.tar REGISTRY/trellis-proxy:VERSION
//
// The binaries are built static (CGO_ENABLED=0) with the version linked in;
// the proxy image also carries this machine's iptables for its init
// container (Debian's iptables package must be installed).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/kube/image"
)

func main() {
	out := flag.String("o", "out/images", "directory to write the image tarballs to")
	registry := flag.String("registry", "localhost", "registry (and path) the images are tagged for")
	version := flag.String("version", buildinfo.String(), "image tag and the binaries' version")
	flag.Parse()
	if err := build(*out, *registry, *version); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func build(out, registry, version string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	bin, err := os.MkdirTemp("", "trellis-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)
	static := func(name string) func(tag, binary, version string) (image.Spec, error) {
		return func(tag, binary, version string) (image.Spec, error) { return image.Static(name, tag, binary, version) }
	}
	for _, spec := range []struct {
		name string
		make func(tag, binary, version string) (image.Spec, error)
	}{{"trellis-proxy", image.Proxy}, {"trellis-control", static("trellis-control")}, {"trellis", static("trellis")}} {
		start := time.Now()
		binary := filepath.Join(bin, spec.name)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X github.com/trellis-mesh/trellis/internal/buildinfo.Version="+version,
			"-o", binary, "./cmd/"+spec.name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s: %w", spec.name, err)
		}
		tag := registry + "/" + spec.name + ":" + version
		s, err := spec.make(tag, binary, version)
		if err != nil {
			return fmt.Errorf("%s: %w", spec.name, err)
		}
		file := filepath.Join(out, spec.name+".tar")
		if err := image.Write(s, file); err != nil {
			return fmt.Errorf("%s: %w", spec.name, err)
		}
		fmt.Printf("%s\t%s\t(%v)\n", tag, file, time.Since(start).Round(100*time.Millisecond))
	}
	return nil
}
