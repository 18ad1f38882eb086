package cli

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/spf13/cobra"

	proxycli "github.com/trellis-mesh/trellis/internal/proxy/cli"
)

// proxyCmd is trellis-proxy inside the trellis binary (hidden): `trellis
// run` starts proxies with it, so that `go run ./cmd/trellis` needs no
// second binary. --run-as-uid drops to that user before anything listens,
// which transparent mode needs (iptables exempts the proxy by its UID).
func proxyCmd() *cobra.Command {
	cmd := proxycli.New()
	cmd.Use, cmd.Hidden = "proxy", true
	var uid int
	cmd.Flags().IntVar(&uid, "run-as-uid", -1, "switch to this user and group ID before starting (local transparent mode)")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if uid < 0 {
			return nil
		}
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("--run-as-uid: %w", err)
		}
		if err := syscall.Setgid(uid); err != nil {
			return fmt.Errorf("--run-as-uid: %w", err)
		}
		if err := syscall.Setuid(uid); err != nil {
			return fmt.Errorf("--run-as-uid: %w", err)
		}
		// Changing credentials clears the parent-death signal `trellis
		// run` set: set it again, and stop if the parent is already gone.
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0); err != nil {
			return fmt.Errorf("--run-as-uid: %w", err)
		}
		if os.Getppid() == 1 {
			return errors.New("--run-as-uid: the process that started this proxy is gone")
		}
		return nil
	}
	return cmd
}
