package demo

import (
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
)

// Explicit mode's services get distinct loopback ports, one per replica,
// free when chosen — even when the picks collide, as random ones once did
// and left a service's instance failing to bind its port for good.
func TestLoopbackPortsAreDistinct(t *testing.T) {
	services := []service{{name: "a", replicas: 3}, {name: "b", replicas: 1}, {name: "c", replicas: 2}}
	// Every service's first try starts where the last one's did, or one
	// port into it; the second is elsewhere.
	base := freeRun(t, 4)
	tries := []int{base, base + 1, base + 10, base + 2, base + 20}
	pick := func() int { p := tries[0]; tries = append(tries[1:], p+100); return p }
	ports, err := loopbackPorts(services, pick)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]string{}
	for _, s := range services {
		for i := range s.replicas {
			p := ports[s.name] + i
			if other, ok := seen[p]; ok {
				t.Fatalf("port %d given to %s and %s: %v", p, other, s.name, ports)
			}
			seen[p] = s.name
		}
	}
	random, err := loopbackPorts(services, func() int { return 20000 + rand.IntN(10000) })
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range services {
		for i := range s.replicas {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(random[s.name]+i))
			if err != nil {
				t.Fatalf("%s's port %d is not free once chosen: %v", s.name, random[s.name]+i, err)
			}
			l.Close()
		}
	}
}

// freeRun returns the first of n consecutive free loopback ports.
func freeRun(t *testing.T, n int) int {
	t.Helper()
	for p := 30000; p < 32000; p += n {
		free := true
		for i := range n {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+i))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return p
		}
	}
	t.Fatal("no free loopback ports")
	return 0
}
