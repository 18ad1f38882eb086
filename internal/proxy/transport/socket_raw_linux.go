//go:build !race && !msan && !asan

package transport

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysRead is read(2) as a raw call: p is not empty, the socket
// non-blocking.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

// sysWrite is write(2) as a raw call: p is not empty, the socket
// non-blocking.
func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}
