package metrics

import (
	"sync"
	"sync/atomic"
)

// TCP holds the transport series of one label set and peer ("src" for
// accepted connections, "dst" for connections the proxy opened).
type TCP struct {
	labels  string
	opened  atomic.Uint64
	open    atomic.Int64
	read    atomic.Uint64
	written atomic.Uint64
	closes  sync.Map // closeKey -> *atomic.Uint64
}

type closeKey struct {
	failure bool
	errno   string
}

// Open counts a new connection.
func (t *TCP) Open() {
	t.opened.Add(1)
	t.open.Add(1)
}

// Close counts a closed connection; errno names the failure ("" on success).
func (t *TCP) Close(failure bool, errno string) {
	t.open.Add(-1)
	k := closeKey{failure, errno}
	v, ok := t.closes.Load(k)
	if !ok {
		v, _ = t.closes.LoadOrStore(k, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(1)
}

// Read counts bytes read from the peer.
func (t *TCP) Read(n int) { t.read.Add(uint64(n)) }

// Write counts bytes written to the peer.
func (t *TCP) Write(n int) { t.written.Add(uint64(n)) }

func (k closeKey) labels() string {
	if k.failure {
		return join(kv("classification", "failure"), kv("errno", k.errno))
	}
	return kv("classification", "success")
}
