package main

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// serve accepts connections on a loopback port and handles each with h.
func serve(t *testing.T, h func(net.Conn)) string { return testkit.Serve(t, h) }

func TestRunEcho(t *testing.T) {
	accepted := make(chan struct{}, 1<<16)
	addr := serve(t, func(c net.Conn) {
		accepted <- struct{}{}
		io.Copy(c, c)
	})
	res := run(addr, 4, 200*time.Millisecond, 32, time.Second)
	if res.Connections == 0 || res.Errors != 0 {
		t.Fatalf("connections %d, errors %d (%v); want some and none", res.Connections, res.Errors, res.ErrorKinds)
	}
	// Every request is a new connection.
	if n := int64(len(accepted)); n != res.Connections {
		t.Errorf("server accepted %d connections for %d requests", n, res.Connections)
	}
	if len(res.Percentiles) != len(percentiles) || res.Percentiles[0].Value <= 0 ||
		res.Percentiles[0].Value > res.Percentiles[3].Value {
		t.Errorf("percentiles %+v", res.Percentiles)
	}
	if res.Rate <= 0 || res.Seconds < 0.2 {
		t.Errorf("rate %v over %vs", res.Rate, res.Seconds)
	}
}

func TestRunWrongEchoAndRefused(t *testing.T) {
	addr := serve(t, func(c net.Conn) {
		buf := make([]byte, 32)
		io.ReadFull(c, buf)
		buf[0] ^= 1
		c.Write(buf)
	})
	res := run(addr, 1, 50*time.Millisecond, 32, time.Second)
	if res.Connections != 0 || res.ErrorKinds["read: echo differs from what was sent"] == 0 {
		t.Errorf("wrong echo: %d connections, errors %v", res.Connections, res.ErrorKinds)
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	res = run(closed, 1, 50*time.Millisecond, 32, time.Second)
	if res.Connections != 0 || res.ErrorKinds["connect: connection refused"] == 0 {
		t.Errorf("refused: %d connections, errors %v", res.Connections, res.ErrorKinds)
	}
}
