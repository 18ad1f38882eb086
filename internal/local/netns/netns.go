// Package netns builds the network of local transparent mode with
// iproute2: one bridge on the host, and for each instance a named network
// namespace joined to it by a veth pair, with its own address, a default
// route through the bridge, and a resolv.conf pointing at the control
// plane's DNS (bind-mounted by `ip netns exec`).
//
// Everything it creates is recorded under /run/trellis: each bridge with
// the control plane (process and data directory) that owns it, each
// namespace with its bridge. Cleanup touches only what one bridge owns and
// only namespaces no process lives in, so a control plane can stop,
// crash and restart under running instances (it adopts its bridge), and
// two control planes on one host never remove each other's network.
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
	"strings"
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

// bridgeMAC is a random locally administered unicast MAC address.
func bridgeMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	rand.Read(mac)
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// DeleteLink removes a network interface; a missing one is not an error.
func DeleteLink(ctx context.Context, name string) error {
	if !linkExists(name) {
		return nil
	}
	// A veth goes away with its peer's namespace, asynchronously: losing
	// that race is not a failure.
	if err := ip(ctx, "link", "del", name); err != nil && linkExists(name) {
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

// NamespaceName is the namespace of instance in mesh namespace ns on
// bridge: trellis-NS-INSTANCE on the default bridge, else
// trellis-BRIDGE-NS-INSTANCE, so that control planes on different bridges
// never share a name.
func NamespaceName(bridge, ns, instance string) string {
	if bridge != DefaultBridge {
		ns = bridge + "-" + ns
	}
	return NamespacePrefix + ns + "-" + instance
}

// HostVeth is the host end of the namespace's veth pair (at most 15 bytes).
func (n Namespace) HostVeth() string {
	h := sha256.Sum256([]byte(n.Name))
	return VethPrefix + hex.EncodeToString(h[:4])
}

// Create makes the namespace and its link; on failure it removes what it made.
func (n Namespace) Create(ctx context.Context) (err error) {
	// Recorded first, so that a crash at any later step leaves nothing
	// cleanup cannot find.
	if err := recordNamespace(n.Name, n.Bridge); err != nil {
		return err
	}
	if err := ip(ctx, "netns", "add", n.Name); err != nil {
		os.Remove(filepath.Join(NamespaceRecords, n.Name))
		return err
	}
	defer func() {
		if err != nil {
			n.Delete(context.WithoutCancel(ctx))
		}
	}()
	// No IPv6 in the namespace: its interception rules are IPv4's, and a
	// link-local IPv6 address (the kernel's default) would reach other
	// instances across the bridge around the proxies, in plaintext.
	// (Without IPv6 in the kernel there is nothing to turn off.)
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		disable := "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"
		if err := ip(ctx, "netns", "exec", n.Name, "/bin/sh", "-c", disable); err != nil {
			return fmt.Errorf("disabling IPv6: %w", err)
		}
	}
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
	if err := os.Remove(filepath.Join(NamespaceRecords, n.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Exec is the argv that runs argv inside the namespace.
func (n Namespace) Exec(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", n.Name}, argv...)
}
