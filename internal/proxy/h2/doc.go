// Package h2 serves HTTP/2 (RFC 9113) connections, handing every stream to
// an http.Handler as net/http's server does, at a fraction of its cost per
// request.
//
// net/http's HTTP/2 server moves every frame across goroutines: a reader
// goroutine hands each frame to the connection's serve goroutine, which
// hands each response's frames to a writer goroutine it starts per write,
// and every hand-off is a channel operation and a wake-up. Profiles of the
// proxy at full load put 40 % of its CPU in those writes and the scheduling
// around them. Here a connection has one goroutine reading frames, which
// acts on each in place (a request starts its handler), and a handler
// writes its own frames: under the connection's lock it encodes them into
// the connection's output buffer, and whichever goroutine finds no write
// under way writes everything buffered in one system call — so the frames
// of responses finishing together leave together.
//
// Frames are read with golang.org/x/net/http2's Framer and HPACK; they are
// written here (a frame header is nine bytes).
package h2
