// Package netns builds the network of local transparent mode with
// iproute2: one bridge on the host, and for each instance a named network
// namespace joined to it by a veth pair, with its own address, a default
// route through the bridge, and a resolv.conf pointing at the control
// plane's DNS (bind-mounted by `ip netns exec`). Everything it creates is
// named with the prefixes below, so leftovers can be found and removed.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Name prefixes of what this package creates.
const (
	NamespacePrefix = "trellis-"
	VethPrefix      = "trl"
)

// EtcDir is where `ip netns exec` finds per-namespace /etc files.
const EtcDir = "/etc/netns"

// ip runs one iproute2 command.
func ip(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// OwnerDir keeps, per bridge, the PID of the process that created it.
const OwnerDir = "/run/trellis"

// Owner is the live process that created bridge name, or 0 if none is
// alive (or it was never recorded).
func Owner(name string) int {
	b, err := os.ReadFile(filepath.Join(OwnerDir, name+".pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// CreateBridge adds bridge name with address gw (its prefix is the
// network), up, and records this process as its owner. It fails if a live
// process owns the bridge; what a dead owner left behind is removed first.
func CreateBridge(ctx context.Context, name string, gw netip.Prefix) error {
	if _, err := os.Stat(filepath.Join("/sys/class/net", name)); err == nil {
		if pid := Owner(name); pid != 0 {
			return fmt.Errorf("bridge %s is in use by process %d (another 'trellis up' or 'trellis demo')", name, pid)
		}
		if err := RemoveLeftovers(ctx); err != nil {
			return fmt.Errorf("removing what a crashed control plane left behind: %w", err)
		}
	}
	if err := os.MkdirAll(OwnerDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(OwnerDir, name+".pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	// A bridge without an address of its own takes the lowest of its
	// ports' and changes it as ports join: a namespace that resolved the
	// gateway just before would send to a MAC nobody answers for until its
	// neighbour entry expires (tens of seconds). A fixed, locally
	// administered unicast address never changes.
	if err := ip(ctx, "link", "add", name, "address", bridgeMAC().String(), "type", "bridge"); err != nil {
		return err
	}
	if err := ip(ctx, "addr", "add", gw.String(), "dev", name); err != nil {
		DeleteBridge(context.WithoutCancel(ctx), name)
		return err
	}
	if err := ip(ctx, "link", "set", name, "up"); err != nil {
		DeleteBridge(context.WithoutCancel(ctx), name)
		return err
	}
	return nil
}

// bridgeMAC is a random locally administered unicast MAC address.
func bridgeMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	rand.Read(mac)
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// DeleteBridge removes bridge name and its owner record.
func DeleteBridge(ctx context.Context, name string) error {
	os.Remove(filepath.Join(OwnerDir, name+".pid"))
	return DeleteLink(ctx, name)
}

// DeleteLink removes a network interface; a missing one is not an error.
func DeleteLink(ctx context.Context, name string) error {
	exists := func() bool {
		_, err := os.Stat(filepath.Join("/sys/class/net", name))
		return !errors.Is(err, os.ErrNotExist)
	}
	if !exists() {
		return nil
	}
	// A veth goes away with its peer's namespace, asynchronously: losing
	// that race is not a failure.
	if err := ip(ctx, "link", "del", name); err != nil && exists() {
		return err
	}
	return nil
}

// Namespace is one instance's network namespace.
type Namespace struct {
	Name    string       // e.g. trellis-default-web-0
	Addr    netip.Prefix // the instance's address on the bridge network
	Gateway netip.Addr   // the bridge's address: default route and DNS
	Bridge  string
	// Search is the DNS search list, e.g. default.svc.cluster.local svc.cluster.local cluster.local.
	Search []string
}

// NamespaceName is the namespace of instance in mesh namespace ns.
func NamespaceName(ns, instance string) string { return NamespacePrefix + ns + "-" + instance }

// HostVeth is the host end of the namespace's veth pair (at most 15 bytes).
func (n Namespace) HostVeth() string {
	h := sha256.Sum256([]byte(n.Name))
	return VethPrefix + hex.EncodeToString(h[:4])
}

// Create makes the namespace and its link; on failure it removes what it made.
func (n Namespace) Create(ctx context.Context) (err error) {
	if err := ip(ctx, "netns", "add", n.Name); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			n.Delete(context.WithoutCancel(ctx))
		}
	}()
	veth := n.HostVeth()
	steps := [][]string{
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n.Name},
		{"link", "set", veth, "master", n.Bridge},
		{"link", "set", veth, "up"},
		{"-n", n.Name, "link", "set", "lo", "up"},
		{"-n", n.Name, "addr", "add", n.Addr.String(), "dev", "eth0"},
		{"-n", n.Name, "link", "set", "eth0", "up"},
		{"-n", n.Name, "route", "add", "default", "via", n.Gateway.String()},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	dir := filepath.Join(EtcDir, n.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	resolv := fmt.Sprintf("# written by trellis for %s\nnameserver %s\nsearch %s\noptions ndots:5\n", n.Name, n.Gateway, strings.Join(n.Search, " "))
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(resolv), 0o644); err != nil {
		return err
	}
	return nil
}

// Delete removes the namespace, its veth pair and its /etc files; parts
// already gone are not errors.
func (n Namespace) Delete(ctx context.Context) error {
	var errs []error
	if _, err := os.Stat(filepath.Join("/var/run/netns", n.Name)); err == nil {
		errs = append(errs, ip(ctx, "netns", "del", n.Name))
	}
	errs = append(errs, DeleteLink(ctx, n.HostVeth()))
	errs = append(errs, os.RemoveAll(filepath.Join(EtcDir, n.Name)))
	return errors.Join(errs...)
}

// Exec is the argv that runs argv inside the namespace.
func (n Namespace) Exec(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", n.Name}, argv...)
}

// Leftovers lists the namespaces and host links this package created that
// still exist.
func Leftovers() (namespaces, links []string) {
	if ents, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), NamespacePrefix) {
				namespaces = append(namespaces, e.Name())
			}
		}
	}
	if ents, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), VethPrefix) || strings.HasPrefix(e.Name(), "trellis") {
				links = append(links, e.Name())
			}
		}
	}
	return namespaces, links
}

// RemoveLeftovers deletes everything Leftovers finds, with each
// namespace's /etc files.
func RemoveLeftovers(ctx context.Context) error {
	namespaces, links := Leftovers()
	var errs []error
	for _, ns := range namespaces {
		errs = append(errs, Namespace{Name: ns}.Delete(ctx))
	}
	for _, l := range links {
		errs = append(errs, DeleteLink(ctx, l))
		os.Remove(filepath.Join(OwnerDir, l+".pid"))
	}
	if ents, err := os.ReadDir(EtcDir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), NamespacePrefix) {
				errs = append(errs, os.RemoveAll(filepath.Join(EtcDir, e.Name())))
			}
		}
	}
	return errors.Join(errs...)
}
