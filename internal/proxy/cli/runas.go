package cli

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// runAs switches the process to user and group uid before anything
// listens, with no supplementary groups: in local transparent mode
// iptables exempts the proxy's own traffic by that UID. The parent-death
// signal `trellis run` set is cleared by the switch: it is set again, and
// a proxy whose parent is already gone stops.
func runAs(uid int) error {
	parent := os.Getppid()
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("--run-as-uid: %w", err)
	}
	if err := syscall.Setgid(uid); err != nil {
		return fmt.Errorf("--run-as-uid: %w", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("--run-as-uid: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("--run-as-uid: %w", err)
	}
	if os.Getppid() != parent { // it died before the signal was set again
		return errors.New("--run-as-uid: the process that started this proxy is gone")
	}
	return nil
}
