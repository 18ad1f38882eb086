package h2

import "time"

// An HTTP/2 rapid-reset flood (CVE-2023-44487) opens streams and cancels
// them at once: each costs the proxy a request forwarded upstream and
// costs the client two frames. Bounding the streams in flight does not
// stop a flood whose handlers end fast, so a connection on which most
// recent streams were reset prematurely — before their response began and
// within a second of opening, by the client or by this side for a frame
// of the client's that required it ("MadeYouReset", CVE-2025-8671) — is
// closed with GOAWAY ENHANCE_YOUR_CALM, as Envoy's premature-reset check
// (the same second) and the h2 crate's pending-reset limit do. A client
// whose requests wait longer and then give up (deadlines, under load) is
// not a flood: its resets cost the proxy no more than its requests.

// Flood thresholds: a connection is a flood once, among the streams of the
// current window, at least floodMinResets were reset prematurely (before
// their response began, within prematureLifetime of opening) and they are
// at least half of the streams. The window halves every floodWindow
// streams, so a long-lived connection is judged on its recent streams.
const (
	floodMinResets    = 100
	floodWindow       = 1000
	prematureLifetime = time.Second
)

// resetCount is a connection's recent streams and premature resets.
type resetCount struct {
	opened, premature int
}

// open counts a stream the client opened.
func (c *resetCount) open() {
	if c.opened++; c.opened >= floodWindow {
		c.opened, c.premature = c.opened/2, c.premature/2
	}
}

// reset counts a stream reset (see above), and reports whether the
// connection has become a flood.
func (c *resetCount) reset(premature bool) bool {
	if !premature {
		return false
	}
	c.premature++
	return c.premature >= floodMinResets && 2*c.premature >= c.opened
}
