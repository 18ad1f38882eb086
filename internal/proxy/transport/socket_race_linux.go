//go:build race || msan || asan

package transport

import "syscall"

// With the race detector (or a sanitizer) reads and writes go through the
// syscall package, which tells the detector which bytes each call read or
// wrote, and that a socket's write happens before the read of its bytes:
// the raw calls of other builds would hide buffer races from it.

func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return max(n, 0), errnoOf(err)
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return max(n, 0), errnoOf(err)
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno) // the syscall package's calls fail with nothing else
}
