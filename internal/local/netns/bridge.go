package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// DefaultBridge is the bridge of local mode unless another is chosen.
const DefaultBridge = "trellis0"

// RecordDir keeps, per bridge, the control plane that owns it.
const RecordDir = "/run/trellis"

// NamespaceRecords keeps, per namespace, the bridge it is attached to.
const NamespaceRecords = RecordDir + "/netns"

// owner is a bridge's record: the data directory of the control plane it
// belongs to, and that control plane's process while it runs (0 when it
// stopped with instances still attached, or crashed).
type owner struct {
	pid     int
	dataDir string
}

func ownerFile(bridge string) string { return filepath.Join(RecordDir, bridge+".owner") }

func readOwner(bridge string) (owner, bool) {
	b, err := os.ReadFile(ownerFile(bridge))
	if err != nil {
		return owner{}, false
	}
	pid, dataDir, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	o := owner{dataDir: dataDir}
	o.pid, _ = strconv.Atoi(pid)
	return o, true
}

func writeOwner(bridge string, o owner) error {
	if err := os.MkdirAll(RecordDir, 0o755); err != nil {
		return err
	}
	tmp := ownerFile(bridge) + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n%s\n", o.pid, o.dataDir)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, ownerFile(bridge))
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// Owner is the live control-plane process that owns bridge, or 0.
func Owner(bridge string) int {
	if o, ok := readOwner(bridge); ok && alive(o.pid) {
		return o.pid
	}
	return 0
}

// Bridges lists the bridges that the control plane of dataDir owns.
func Bridges(dataDir string) []string {
	ents, _ := os.ReadDir(RecordDir)
	var out []string
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".owner")
		if !ok {
			continue
		}
		if o, _ := readOwner(name); o.dataDir == dataDir {
			out = append(out, name)
		}
	}
	return out
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// EnsureBridge gives the control plane of dataDir bridge name with address
// gw, up. A bridge that plane left behind — stopped with instances still
// running, or crashed — is adopted as it is: its instances keep their
// network and carry on. A bridge of another data directory, or of a live
// process, is refused. It reports whether the bridge was adopted.
func EnsureBridge(ctx context.Context, name string, gw netip.Prefix, dataDir string) (adopted bool, err error) {
	if linkExists(name) {
		o, recorded := readOwner(name)
		switch {
		case alive(o.pid):
			return false, fmt.Errorf("bridge %s is in use by process %d (the control plane of %s); stop it, or choose another bridge", name, o.pid, o.dataDir)
		case !recorded:
			return false, fmt.Errorf("bridge %s exists but trellis has no record of it (%s is missing): remove it ('ip link del %s') or choose another bridge", name, ownerFile(name), name)
		case o.dataDir != dataDir:
			return false, fmt.Errorf("bridge %s belongs to the control plane of data directory %s, which is not running: start that one, remove it with 'trellis --data-dir %s down', or choose another bridge", name, o.dataDir, o.dataDir)
		}
		if err := writeOwner(name, owner{pid: os.Getpid(), dataDir: dataDir}); err != nil {
			return false, err
		}
		for _, args := range [][]string{{"addr", "replace", gw.String(), "dev", name}, {"link", "set", name, "up"}} {
			if err := ip(ctx, args...); err != nil {
				return false, err
			}
		}
		_, err := removeDead(ctx, name)
		return true, err
	}
	if used, err := networkInUse(ctx, gw.Masked(), name); err != nil || used != "" {
		if err == nil {
			err = fmt.Errorf("network %s overlaps %s: choose another with --network-cidr", gw.Masked(), used)
		}
		return false, err
	}
	if err := writeOwner(name, owner{pid: os.Getpid(), dataDir: dataDir}); err != nil {
		return false, err
	}
	// A bridge without an address of its own takes the lowest of its
	// ports' and changes it as ports join: a namespace that resolved the
	// gateway just before would send to a MAC nobody answers for until its
	// neighbour entry expires (tens of seconds). A fixed, locally
	// administered unicast address never changes.
	if err := ip(ctx, "link", "add", name, "address", bridgeMAC().String(), "type", "bridge"); err != nil {
		os.Remove(ownerFile(name))
		return false, err
	}
	for _, args := range [][]string{{"addr", "add", gw.String(), "dev", name}, {"link", "set", name, "up"}} {
		if err := ip(ctx, args...); err != nil {
			DeleteBridge(context.WithoutCancel(ctx), name)
			return false, err
		}
	}
	return false, nil
}

// ValidLinkName reports why name cannot name a network interface.
func ValidLinkName(name string) error {
	if len(name) == 0 || len(name) > 15 || name == "." || name == ".." {
		return errors.New("an interface name has 1 to 15 characters")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%q is not allowed: letters, digits, '-', '_' and '.' only", c)
		}
	}
	return nil
}

// networkInUse describes the first of the host's networks (interface
// addresses and routes, bridge's own excepted) that overlaps p, or is "".
func networkInUse(ctx context.Context, p netip.Prefix, bridge string) (string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil || ifc.Name == bridge {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			addr, ok4 := netip.AddrFromSlice(ipn.IP.To4())
			if !ok || !ok4 {
				continue
			}
			ones, _ := ipn.Mask.Size()
			q := netip.PrefixFrom(addr, ones)
			o, trellis := readOwner(ifc.Name)
			// Proxies' users are numbered by the low 24 bits of their
			// addresses: two bridges must differ there too.
			if q.Overlaps(p) || trellis && q.Bits() >= 8 && low24(q).Overlaps(low24(p)) {
				desc := fmt.Sprintf("%s on %s", q, ifc.Name)
				if trellis {
					desc += " (the bridge of the control plane of " + o.dataDir + ")"
				}
				return desc, nil
			}
		}
	}
	out, err := exec.CommandContext(ctx, "ip", "-4", "route", "show", "table", "main").Output()
	if err != nil {
		return "", fmt.Errorf("ip route: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "default" || slices.Contains(f, bridge) {
			continue
		}
		q, err := netip.ParsePrefix(f[0])
		if err != nil {
			a, err := netip.ParseAddr(f[0])
			if err != nil {
				continue
			}
			q = netip.PrefixFrom(a, 32)
		}
		if q.Overlaps(p) {
			return "the route " + line, nil
		}
	}
	return "", nil
}

// low24 is p with its first octet zeroed.
func low24(p netip.Prefix) netip.Prefix {
	a := p.Addr().As4()
	a[0] = 0
	return netip.PrefixFrom(netip.AddrFrom4(a), p.Bits())
}

// ReleaseBridge is what the owning control plane does when it stops: the
// namespaces no process lives in are removed, and the bridge with them if
// none is left; otherwise the bridge stays for the running instances (the
// next EnsureBridge of the same data directory adopts it, and the last
// instance to stop removes it). It returns how many instances still run.
func ReleaseBridge(ctx context.Context, name string) (live int, err error) {
	o, _ := readOwner(name)
	if o.pid != 0 && o.pid != os.Getpid() && alive(o.pid) {
		return 0, fmt.Errorf("bridge %s is in use by process %d", name, o.pid)
	}
	if live, err = removeDead(ctx, name); err != nil || live > 0 {
		if err == nil {
			err = writeOwner(name, owner{dataDir: o.dataDir})
		}
		return live, err
	}
	return 0, DeleteBridge(ctx, name)
}

// RemoveBridgeIfUnused removes bridge when no control plane runs on it and
// no namespace is attached: for the last instance of a stopped control
// plane.
func RemoveBridgeIfUnused(ctx context.Context, name string) error {
	if Owner(name) != 0 || len(Attached(name)) > 0 {
		return nil
	}
	return DeleteBridge(ctx, name)
}

// DeleteBridge removes bridge name and its record.
func DeleteBridge(ctx context.Context, name string) error {
	os.Remove(ownerFile(name))
	return DeleteLink(ctx, name)
}

// Attached lists the namespaces recorded on bridge.
func Attached(bridge string) []string {
	ents, _ := os.ReadDir(NamespaceRecords)
	var out []string
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(NamespaceRecords, e.Name())); err == nil && strings.TrimSpace(string(b)) == bridge {
			out = append(out, e.Name())
		}
	}
	return out
}

// removeDead deletes the namespaces on bridge that no process lives in and
// reports how many others still have processes.
func removeDead(ctx context.Context, bridge string) (live int, err error) {
	var errs []error
	for _, name := range Attached(bridge) {
		if inUse(ctx, name) {
			live++
			continue
		}
		errs = append(errs, Namespace{Name: name}.Delete(ctx))
	}
	return live, errors.Join(errs...)
}

// inUse reports whether any process is in namespace name.
func inUse(ctx context.Context, name string) bool {
	if _, err := os.Stat(filepath.Join("/var/run/netns", name)); err != nil {
		return false
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output()
	return err == nil && len(strings.TrimSpace(string(out))) > 0
}

func recordNamespace(name, bridge string) error {
	if err := os.MkdirAll(NamespaceRecords, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(NamespaceRecords, name), []byte(bridge+"\n"), 0o644)
}
