package transport

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OriginalDst returns the destination a connection had before an iptables
// REDIRECT rewrote it to the proxy, and whether it was redirected at all. A
// connection that reached the proxy directly reports ok == false, as does
// one that is not a TCP socket (a *net.TCPConn, or a Socket around one).
func OriginalDst(c net.Conn) (addr netip.AddrPort, ok bool, err error) {
	sc, isSocket := c.(syscall.Conn)
	la, isTCP := c.LocalAddr().(*net.TCPAddr)
	if !isSocket || !isTCP {
		return netip.AddrPort{}, false, nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, false, err
	}
	local := la.AddrPort()
	var sockErr error
	ctrlErr := raw.Control(func(fd uintptr) {
		if local.Addr().Unmap().Is4() {
			addr, sockErr = origDst4(int(fd))
		} else {
			addr, sockErr = origDst6(int(fd))
		}
	})
	if ctrlErr != nil {
		return netip.AddrPort{}, false, ctrlErr
	}
	if sockErr != nil {
		// ENOENT: no conntrack NAT entry, i.e. not redirected.
		if sockErr == unix.ENOENT {
			return netip.AddrPort{}, false, nil
		}
		return netip.AddrPort{}, false, fmt.Errorf("SO_ORIGINAL_DST: %w", sockErr)
	}
	if addr.Addr().Unmap() == local.Addr().Unmap() && addr.Port() == local.Port() {
		return addr, false, nil
	}
	return addr, true, nil
}

func origDst4(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, err
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}

func origDst6(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet6
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, err
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), nil
}

func getsockopt(fd, level, opt int, val unsafe.Pointer, size *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(val), uintptr(unsafe.Pointer(size)), 0)
	if e != 0 {
		return syscall.Errno(e)
	}
	return nil
}

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h.
const ip6tSOOriginalDst = 80
