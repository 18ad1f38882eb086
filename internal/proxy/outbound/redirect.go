package outbound

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
)

// redirect answers with the rule's redirect; prefix is the path prefix
// the request matched (for ReplacePrefixMatch).
func redirect(w http.ResponseWriter, r *http.Request, rd *destinationv1.Redirect, prefix string) {
	u := *r.URL
	u.Scheme = "http"
	if rd.Scheme != "" {
		u.Scheme = rd.Scheme
	}
	// Without a port or scheme the request's own port stays (a mesh has no
	// listener port to fall back to); a scheme alone implies its own port.
	host, port := r.Host, ""
	if h, p, err := net.SplitHostPort(host); err == nil {
		host, port = h, p
	}
	if rd.Hostname != "" {
		host = rd.Hostname
	}
	switch {
	case rd.Port != 0:
		port = strconv.Itoa(int(rd.Port))
	case rd.Scheme != "":
		port = ""
	}
	u.Host = host
	if port != "" {
		u.Host = net.JoinHostPort(host, port)
	}
	switch {
	case rd.Path != "":
		u.Path, u.RawPath = rd.Path, ""
	case rd.Prefix != "" && prefix != "":
		rest := strings.TrimPrefix(u.Path, strings.TrimSuffix(prefix, "/"))
		u.Path, u.RawPath = strings.TrimSuffix(rd.Prefix, "/")+rest, ""
		if u.Path == "" {
			u.Path = "/"
		}
	}
	code := int(rd.StatusCode)
	if code == 0 {
		code = http.StatusFound
	}
	http.Redirect(w, r, u.String(), code)
}
