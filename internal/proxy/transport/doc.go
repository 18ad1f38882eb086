// Package transport is the bottom of both proxy stacks: it accepts
// connections, recovers where a redirected connection was originally going
// (SO_ORIGINAL_DST), dials targets, reads and writes every connection with
// raw system calls on its non-blocking socket (Socket), and counts every
// connection and byte in the tcp_* metrics.
package transport
