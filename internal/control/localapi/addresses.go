package localapi

import (
	"fmt"
	"net/netip"
	"sync"
)

// Addresses hands out the IPs of instances' network namespaces on the
// bridge network, one per owner; the first address is the bridge's own.
type Addresses struct {
	Prefix netip.Prefix

	mu    sync.Mutex
	owner map[string]netip.Addr
	used  map[netip.Addr]bool
}

// NewAddresses returns an allocator for prefix.
func NewAddresses(prefix netip.Prefix) *Addresses {
	return &Addresses{Prefix: prefix.Masked(), owner: map[string]netip.Addr{}, used: map[netip.Addr]bool{}}
}

// Gateway is the bridge's address: the prefix's first.
func (a *Addresses) Gateway() netip.Addr { return a.Prefix.Addr().Next() }

// Allocate returns owner's address, taking the lowest free one the first time.
func (a *Addresses) Allocate(owner string) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip, ok := a.owner[owner]; ok {
		return ip, nil
	}
	for ip := a.Gateway().Next(); a.Prefix.Contains(ip.Next()); ip = ip.Next() {
		if !a.used[ip] {
			a.owner[owner], a.used[ip] = ip, true
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address left in %s", a.Prefix)
}

// Release frees owner's address.
func (a *Addresses) Release(owner string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip, ok := a.owner[owner]; ok {
		delete(a.owner, owner)
		delete(a.used, ip)
	}
}

// Reserve records that owner already holds ip (found in the store at start).
func (a *Addresses) Reserve(owner string, ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.owner[owner], a.used[ip] = ip, true
}
