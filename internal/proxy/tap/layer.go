package tap

import (
	"net/http"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Layer reports the requests of direction dir ("inbound" or "outbound") to
// hub's subscribers: a RequestInit when the request arrives, a ResponseInit
// when its response head goes out and a ResponseEnd after its body and
// trailers, or when it breaks off. With a nil hub it is no stage at all.
func Layer(hub *Hub, dir string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if hub == nil {
			return next
		}
		return &layer{hub: hub, dir: dir, next: next}
	}
}

type layer struct {
	hub  *Hub
	dir  string
	next http.Handler
}

func (l *layer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	subs := l.hub.subs.Load()
	if subs == nil {
		l.next.ServeHTTP(w, r)
		return
	}
	l.serveTapped(*subs, w, r)
}

// serveTapped serves a request while someone is subscribed: it is reported
// to the subscribers that select it and are under their rate limit.
func (l *layer) serveTapped(subs []*Subscription, w http.ResponseWriter, r *http.Request) {
	var t *tapped
	for _, s := range subs {
		if s.match.matches(l.dir, r) && s.limit.Allow() {
			if t == nil {
				t = &tapped{ResponseWriter: w}
				t.to = t.buf[:0]
			}
			t.to = append(t.to, s)
		}
	}
	if t == nil {
		l.next.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	t.start = start
	t.describe(l.hub, l.dir, r)
	ev := t.event()
	ev.Event = &tapv1.TapEvent_RequestInit{RequestInit: &tapv1.RequestInit{
		Method:    r.Method,
		Scheme:    scheme(r),
		Authority: r.Host,
		Path:      r.URL.Path,
		Timestamp: timestamppb.New(start),
	}}
	t.publish(ev)
	completed := false
	defer func() { t.end(r, completed) }()
	l.next.ServeHTTP(t, r)
	completed = true
}

func scheme(r *http.Request) string {
	switch {
	case r.URL.Scheme != "":
		return r.URL.Scheme
	case r.TLS != nil:
		return "https"
	}
	return "http"
}

// tapped is the response writer of a reported request: it reports the
// response head and counts the body.
type tapped struct {
	http.ResponseWriter
	to    []*Subscription // the subscribers it goes to
	buf   [2]*Subscription
	start time.Time
	// what every event of the request carries
	id                        uint64
	direction, source, dst    string
	tls                       bool
	clientID, serverID, route string
	labels                    map[string]string

	status int
	bytes  uint64
}

// describe fills in what every event of r carries.
func (t *tapped) describe(hub *Hub, dir string, r *http.Request) {
	ctx := r.Context()
	t.id = hub.ids.Add(1)
	t.direction = dir
	t.dst = httpproxy.Target(ctx)
	var labels map[string]string
	label := func(k, v string) {
		if v == "" {
			return
		}
		if labels == nil {
			labels = make(map[string]string, 4)
		}
		labels[k] = v
	}
	if m := transport.MetaFrom(ctx); m != nil {
		if m.Client.IsValid() {
			t.source = m.Client.String()
		}
		if t.dst == "" && m.Local.IsValid() {
			t.dst = m.Local.String()
		}
		label("protocol", m.Protocol)
		if dir == string(transport.Inbound) {
			t.tls, t.clientID = m.TLS == "true", m.ClientID
		}
	}
	if t.source == "" {
		t.source = r.RemoteAddr
	}
	if dir == string(transport.Outbound) {
		t.serverID = httpproxy.Peer(ctx)
		t.tls = t.serverID != ""
		if t.tls {
			t.clientID = hub.cfg.Identity
		}
	} else if t.tls {
		t.serverID = hub.cfg.Identity
	}
	var kind string
	t.route, kind = httpproxy.Route(ctx)
	label("route_kind", kind)
	if d := explain.From(ctx); d != nil {
		label("rule", d.Rule)
		label("backend", d.Backend)
	}
	if dst := httpproxy.Dst(ctx); dst != "" {
		if labels == nil {
			labels = make(map[string]string, 4)
		}
		addDstLabels(labels, dst)
	}
	t.labels = labels
}

// event returns a new event with what every event of the request carries.
func (t *tapped) event() *tapv1.TapEvent {
	return &tapv1.TapEvent{
		Id:          t.id,
		Direction:   t.direction,
		Source:      t.source,
		Destination: t.dst,
		Tls:         t.tls,
		ClientId:    t.clientID,
		ServerId:    t.serverID,
		Route:       t.route,
		Labels:      t.labels,
	}
}

// publish gives ev to every subscriber of the request. Subscribers only
// read events, so they share it.
func (t *tapped) publish(ev *tapv1.TapEvent) {
	for _, s := range t.to {
		s.publish(ev)
	}
}

func (t *tapped) responseInit(status int) {
	t.status = status
	ev := t.event()
	ev.Event = &tapv1.TapEvent_ResponseInit{ResponseInit: &tapv1.ResponseInit{
		Status:           uint32(status),
		SinceRequestInit: durationpb.New(time.Since(t.start)),
	}}
	t.publish(ev)
}

// end reports the end of the response; completed is false when the handler
// broke off (panicked, as the forwarders do to abort a response).
func (t *tapped) end(r *http.Request, completed bool) {
	h := t.Header()
	var reason string
	switch {
	case h.Get(httpproxy.ErrorHeader) != "":
		reason = h.Get(httpproxy.ErrorHeader)
	case !completed:
		reason = "response aborted"
	case r.Context().Err() != nil:
		reason = "client went away"
	}
	if t.status == 0 && completed && reason == "" {
		// A handler that writes nothing gets an empty 200.
		t.responseInit(http.StatusOK)
	}
	ev := t.event()
	ev.Event = &tapv1.TapEvent_ResponseEnd{ResponseEnd: &tapv1.ResponseEnd{
		GrpcStatus:       int32(httpproxy.GRPCStatus(h)),
		SinceRequestInit: durationpb.New(time.Since(t.start)),
		ResponseBytes:    t.bytes,
		Error:            reason,
	}}
	t.publish(ev)
}

func (t *tapped) WriteHeader(code int) {
	if t.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		t.responseInit(code)
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *tapped) Write(p []byte) (int, error) {
	if t.status == 0 {
		t.WriteHeader(http.StatusOK)
	}
	n, err := t.ResponseWriter.Write(p)
	t.bytes += uint64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (t *tapped) Unwrap() http.ResponseWriter { return t.ResponseWriter }
