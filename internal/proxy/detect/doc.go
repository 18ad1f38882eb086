// Package detect decides what protocol a new connection speaks by peeking at
// its first bytes, without consuming them: the HTTP/2 connection preface (h2c
// prior knowledge), an HTTP/1.x request line, a TLS ClientHello (whose SNI
// and ALPN protocols are recorded) or, failing those, opaque TCP.
//
// # Server-speaks-first protocols
//
// Protocols such as SMTP, MySQL or NATS wait for the server's greeting before
// the client says anything, so a proxy that only waits for the client would
// stall for the whole detect timeout. Detect therefore races both sides: if
// the client has sent nothing after a short delay (default 100 ms), it dials
// the target early and reads from both. If the server's bytes arrive first the
// connection is opaque, and the already-open upstream connection (with the
// greeting buffered) is handed to the TCP proxy; if the client's bytes arrive
// first, detection goes on as usual and the early connection is reused for
// opaque traffic or closed for HTTP. Clients that speak first — nearly all of
// them, HTTP included — never trigger the early dial, so it costs nothing on
// the common path.
//
// The same probe removes a trap the detect timeout sets for HTTP clients
// that open connections ahead of use (connection pools): while the server
// is silent too, a silent client is not pushed to opaque at the detect
// timeout but waited for (Detector.MaxWait, the idle timeout), so its
// requests still get HTTP treatment — metrics, identity headers, routing.
// The detect timeout still applies where the target cannot be probed. The
// early connection itself is held for the detect timeout at most: a client
// that stays silent longer is still waited for, but holds nothing on the
// target's side.
//
// # Bounds
//
// Detection is a bounded state machine: every read has room for at least
// one byte and a deadline, a run of empty reads ends it, the buffer stops at
// MaxPeek, and it ends early, closing the connection, when the proxy drains
// (nothing the client sent has been forwarded yet).
package detect
