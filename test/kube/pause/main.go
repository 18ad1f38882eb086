// Command pause is the Pod sandbox's process for the test cluster: it
// waits for SIGTERM or SIGINT and reaps orphaned children meanwhile.
//
//	go run ./test/kube/pause -image out/pause.tar   # writes localhost/pause:3.10
//
// With -image it writes an image of itself instead (it must be built with
// CGO_ENABLED=0, as go run does for it here: it uses no cgo package).
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

func main() {
	out := flag.String("image", "", "write the pause image tarball here and exit")
	flag.Parse()
	if *out != "" {
		if err := writeImage(*out); err != nil {
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

func writeImage(out string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	f, err := image.HostFile(exe)
	if err != nil {
		return err
	}
	f.Path, f.Mode = "/pause", 0o755
	return image.Write(image.Spec{Tag: Tag, Files: []image.File{f}, Entrypoint: []string{"/pause"}}, out)
}
