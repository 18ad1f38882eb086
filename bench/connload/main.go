// Command connload measures new connections per second through a TCP echo
// path: each of -c workers repeatedly connects to -addr, writes -size bytes,
// reads them back (the target must echo), checks them and closes the
// connection, for -d. Every request is a new connection, so through a pair
// of meshed proxies every request costs a new mesh TLS handshake.
//
// Usage:
//
//	connload -addr 127.0.0.1:18080 -c 16 -d 15s -json out.json
//
// It prints a one-line summary on stdout and, with -json, writes
//
//	{"Connections": N, "Errors": N, "ErrorKinds": {"kind": N}, "Seconds": S,
//	 "Rate": N/S, "Percentiles": [{"Percentile": 50, "Value": ms}, ...]}
//
// Connections counts completed echo round trips; Value is the time from
// starting to connect to having read the echo, in milliseconds, computed
// exactly (nearest rank) from every connection. Workers finish the
// connection they are in when -d ends; Seconds runs until the last one is
// done. Standard library only.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

var percentiles = []float64{50, 90, 99, 99.9}

type percentile struct {
	Percentile float64
	Value      float64 // milliseconds
}

type result struct {
	Connections int64
	Errors      int64
	ErrorKinds  map[string]int64
	Seconds     float64
	Rate        float64
	Percentiles []percentile
}

// worker is what one worker collects; merged at the end.
type worker struct {
	lat    []time.Duration
	errors map[string]int64
}

func main() {
	addr := flag.String("addr", "", "host:port of the TCP echo path (required)")
	conns := flag.Int("c", 16, "concurrent workers, each opening one connection at a time")
	dur := flag.Duration("d", 5*time.Second, "how long to start new connections")
	size := flag.Int("size", 32, "bytes written (and echoed back) on each connection")
	timeout := flag.Duration("timeout", 3*time.Second, "limit for one connection: connect, write, read the echo")
	jsonOut := flag.String("json", "", "write the result as JSON to this file")
	flag.Parse()
	if *addr == "" || *conns < 1 || *dur <= 0 || *size < 1 || *timeout <= 0 {
		flag.Usage()
		os.Exit(2)
	}

	res := run(*addr, *conns, *dur, *size, *timeout)
	fmt.Printf("%d connections in %.3fs: %.0f conn/s, %d errors", res.Connections, res.Seconds, res.Rate, res.Errors)
	for _, p := range res.Percentiles {
		fmt.Printf(", p%g %.3f ms", p.Percentile, p.Value)
	}
	fmt.Println()
	for k, n := range res.ErrorKinds {
		fmt.Printf("  error %s: %d\n", k, n)
	}
	if *jsonOut != "" {
		data, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonOut, append(data, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "connload:", err)
			os.Exit(1)
		}
	}
	if res.Connections == 0 {
		os.Exit(1)
	}
}

func run(addr string, n int, dur time.Duration, size int, timeout time.Duration) result {
	workers := make([]worker, n)
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		w.errors = map[string]int64{}
		w.lat = make([]time.Duration, 0, 4096)
		wg.Go(func() {
			msg := payload(i, size)
			buf := make([]byte, size)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := once(addr, msg, buf, timeout); err != nil {
					w.errors[kind(err)]++
					time.Sleep(time.Millisecond) // do not spin on a refusing target
					continue
				}
				w.lat = append(w.lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	res := result{ErrorKinds: map[string]int64{}, Seconds: elapsed.Seconds()}
	var all []time.Duration
	for _, w := range workers {
		all = append(all, w.lat...)
		for k, v := range w.errors {
			res.ErrorKinds[k] += v
			res.Errors += v
		}
	}
	res.Connections = int64(len(all))
	if res.Seconds > 0 {
		res.Rate = float64(res.Connections) / res.Seconds
	}
	if len(all) > 0 {
		slices.Sort(all)
		for _, p := range percentiles {
			rank := int(math.Ceil(p/100*float64(len(all)) - 1e-9))
			rank = min(max(rank, 1), len(all))
			res.Percentiles = append(res.Percentiles, percentile{p, float64(all[rank-1]) / 1e6})
		}
	}
	return res
}

// once opens one connection, writes msg, reads the echo into buf, checks it
// and closes the connection.
func once(addr string, msg, buf []byte, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(buf, msg) {
		return errors.New("read: echo differs from what was sent")
	}
	return nil
}

// payload is a line of size bytes naming the worker, so a misrouted echo
// is noticed.
func payload(worker, size int) []byte {
	b := bytes.Repeat([]byte{'x'}, size)
	copy(b, fmt.Sprintf("connload %d ", worker))
	b[size-1] = '\n'
	return b
}

// kind names an error without addresses, so errors can be counted by kind.
func kind(err error) string {
	op, _, _ := strings.Cut(err.Error(), ":")
	var errno syscall.Errno
	var nerr net.Error
	switch {
	case errors.As(err, &errno):
		return op + ": " + errno.Error()
	case errors.As(err, &nerr) && nerr.Timeout():
		return op + ": timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return op + ": connection closed early"
	}
	return err.Error()
}
