// Command pause is the Pod sandbox's process for the test cluster: it
// waits for SIGTERM or SIGINT and reaps orphaned children meanwhile.
//
//	go run ./test/kube/pause -image out/pause.tar   # writes localhost/pause:3.10
//	go run ./test/kube/pause -image out/pause.tar -coredns BIN -coredns-image out/coredns.tar
//
// With -image it writes an image of itself instead (it must be built with
// CGO_ENABLED=0, as go run does for it here: it uses no cgo package), and
// with -coredns the image of the cluster's DNS server, that static binary
// alone (localhost/coredns:VERSION).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/trellis-mesh/trellis/internal/kube/image"
)

// Tag is the sandbox image containerd is configured with.
const Tag = "localhost/pause:3.10"

// CoreDNSTag is the cluster DNS image cluster.sh deploys.
const CoreDNSTag = "localhost/coredns:v1.14.7"

func main() {
	out := flag.String("image", "", "write the pause image tarball here and exit")
	coredns := flag.String("coredns", "", "with -image: the CoreDNS binary to write an image of")
	corednsOut := flag.String("coredns-image", "", "with -coredns: where to write its image tarball")
	flag.Parse()
	if *out != "" {
		exe, err := os.Executable()
		if err == nil {
			err = writeImage(Tag, "/pause", exe, *out)
		}
		if err == nil && *coredns != "" {
			err = writeImage(CoreDNSTag, "/coredns", *coredns, *corednsOut)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "pause:", err)
			os.Exit(1)
		}
		return
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}

// writeImage writes an image of the static binary at host as path, its
// entrypoint.
func writeImage(tag, path, host, out string) error {
	f, err := image.HostFile(host)
	if err != nil {
		return err
	}
	f.Path, f.Mode = path, 0o755
	return image.Write(image.Spec{Tag: tag, Files: []image.File{f}, Entrypoint: []string{path}}, out)
}
