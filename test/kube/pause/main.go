// Command pause is the Pod sandbox's process for the test cluster: it
// waits for SIGTERM or SIGINT and reaps orphaned children meanwhile.
//
//	go run ./test/kube/pause -image out/pause.tar   # writes localhost/pause:3.10
//	go run ./test/kube/pause -image out/pause.tar -static localhost/coredns:v1.14.7=BIN=out/coredns.tar
//
// With -image it writes an image of itself instead (it must be built with
// CGO_ENABLED=0, as go run does for it here: it uses no cgo package), and
// with -static TAG=BINARY=TARBALL the image of another static binary alone,
// /NAME its entrypoint (the cluster's DNS server, the Prometheus that
// `trellis install --prometheus` deploys).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/trellis-mesh/trellis/internal/kube/image"
)

// Tag is the sandbox image containerd is configured with.
const Tag = "localhost/pause:3.10"

func main() {
	out := flag.String("image", "", "write the pause image tarball here and exit")
	var static [][3]string
	flag.Func("static", "with -image: TAG=BINARY=TARBALL, also write an image of that static binary (repeatable)", func(s string) error {
		parts := strings.Split(s, "=")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return fmt.Errorf("%q: want TAG=BINARY=TARBALL", s)
		}
		static = append(static, [3]string(parts))
		return nil
	})
	flag.Parse()
	if *out != "" {
		exe, err := os.Executable()
		if err == nil {
			err = writeImage(Tag, exe, *out)
		}
		for _, s := range static {
			if err == nil {
				err = writeImage(s[0], s[1], s[2])
			}
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

// writeImage writes an image of the static binary at host as /NAME, NAME
// the last element of tag's repository, its entrypoint.
func writeImage(tag, host, out string) error {
	f, err := image.HostFile(host)
	if err != nil {
		return err
	}
	name, _, _ := strings.Cut(tag[strings.LastIndex(tag, "/")+1:], ":")
	path := "/" + name
	f.Path, f.Mode = path, 0o755
	return image.Write(image.Spec{Tag: tag, Files: []image.File{f}, Entrypoint: []string{path}}, out)
}
