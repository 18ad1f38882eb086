package admin

import (
	"net"
	"net/http"
	"strconv"
	"time"
)

// probeTimeout bounds one TCP probe's connect.
const probeTimeout = time.Second

// tcpProbe answers GET /probe/tcp/{port} for the application ports in
// ports: 200 when a TCP connection to the port opens, 503 when it does not
// — what the kubelet's TCP probe would learn if the proxy did not
// intercept the port. It connects to the address the probe itself came in
// on (the Pod's IP), as the kubelet does; the proxy's own connections are
// never intercepted. Other ports are 404: the endpoint checks nothing it
// was not told to.
func tcpProbe(ports map[uint16]bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := strconv.ParseUint(r.PathValue("port"), 10, 16)
		if err != nil || !ports[uint16(p)] {
			http.Error(w, "not a probed port", http.StatusNotFound)
			return
		}
		host := "127.0.0.1"
		if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			if h, _, err := net.SplitHostPort(local.String()); err == nil {
				host = h
			}
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.FormatUint(p, 10)), probeTimeout)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		c.Close()
		w.Write([]byte("open\n"))
	}
}
