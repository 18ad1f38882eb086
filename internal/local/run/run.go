package run

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
)

// Run starts every replica and supervises them until ctx ends (then it
// stops them in order and cleans up) or every replica's application has
// exited. A replica whose application exits is taken out: its proxy
// deregisters it and stops.
func Run(ctx context.Context, o Options) error {
	set, err := Start(ctx, o)
	if err != nil {
		return err
	}
	return set.Wait(ctx)
}

// Set is a started group of replicas.
type Set struct {
	o           Options
	st          localapi.Status
	api         *localapi.Client
	transparent bool
	user        *appUser

	mu        sync.Mutex
	instances []*instance // by index; a restart replaces its replica
	stopped   bool        // Stop ran: a restart that lands after stops its replica
}

// Start validates o and starts the replicas; on error nothing is left running.
func Start(ctx context.Context, o Options) (*Set, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if !o.Attach {
		if _, err := exec.LookPath(o.Command[0]); err != nil {
			return nil, fmt.Errorf("command %q: %w", o.Command[0], err)
		}
	}
	user, err := lookupUser(o.User)
	if err != nil {
		return nil, err
	}
	api := localapi.NewClient(filepath.Join(o.DataDir, localapi.SocketName))
	st, err := api.Status(ctx)
	if err != nil {
		return nil, err
	}
	mode := o.Mode
	if o.Attach {
		mode = "explicit"
	}
	transparent, err := chooseMode(mode, st)
	if err != nil {
		return nil, err
	}
	if transparent {
		for _, u := range o.Upstreams {
			if u.LocalPort != 0 {
				return nil, fmt.Errorf("--upstream %s:%d=%d: transparent instances dial %s:%d by name; local ports are for explicit mode (--mode explicit)", u.Name, u.Port, u.LocalPort, u.Name, u.Port)
			}
		}
	}
	if o.Port != 0 {
		if err := bindService(ctx, api, o); err != nil {
			return nil, err
		}
	}
	if !transparent && o.Port != 0 && !o.Attach {
		for i := range o.Replicas {
			if err := portFree(o.Port + i); err != nil {
				return nil, fmt.Errorf("--port: %w; to mesh an application that runs already, add --attach", err)
			}
		}
	}
	s := &Set{o: o, st: st, api: api, transparent: transparent, user: user}
	for i := range o.Replicas {
		in := s.replica(i)
		if err := in.start(ctx); err != nil {
			s.Stop()
			return nil, fmt.Errorf("%s: %w", in.name, err)
		}
		s.instances = append(s.instances, in)
		s.describe(in)
		if app := net.JoinHostPort("127.0.0.1", strconv.Itoa(o.Port)); o.Attach && o.Port != 0 && !accepts(app) {
			fmt.Fprintf(o.Out, "%s: nothing accepts connections on %s yet; the instance joins service %s once the application does\n", in.name, app, o.Service)
		}
	}
	return s, nil
}

// replica is replica i, not started yet.
func (s *Set) replica(i int) *instance {
	return &instance{name: fmt.Sprintf("%s-%d", s.o.Name, i), o: &s.o, st: s.st, api: s.api, transparent: s.transparent, index: i,
		upstream: map[string]string{}, user: s.user}
}

// accepts reports whether something accepts TCP connections on addr.
func accepts(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// chooseMode decides between transparent and explicit mode.
func chooseMode(mode string, st localapi.Status) (bool, error) {
	root := os.Geteuid() == 0
	switch mode {
	case "transparent":
		if !root {
			return false, errors.New("--mode transparent needs root (network namespaces and iptables)")
		}
		if st.Network == "" {
			return false, errors.New("--mode transparent needs a control plane with a bridge network: start 'trellis up' as root")
		}
		return true, nil
	case "explicit":
		return false, nil
	}
	return root && st.Network != "", nil
}

// describe prints where a started replica is and what its application got.
func (s *Set) describe(in *instance) {
	mode := "explicit"
	switch {
	case in.transparent:
		mode = "transparent, network namespace " + in.ns.Name
	case s.o.Attach:
		mode = "explicit, attached to the running application"
	}
	addr := fmt.Sprintf("%s:%d", in.addr, in.appPort)
	if in.appPort == 0 {
		addr = in.addr.String() + " (a client only: in no service)"
	}
	fmt.Fprintf(s.o.Out, "%s: started (%s)\n  identity  %s\n  address   %s\n  proxy     http://%s/metrics\n", in.name, mode, in.identity(), addr, in.admin)
	var env []string
	for _, kv := range in.env {
		if k, _, _ := strings.Cut(kv, "="); k != "http_proxy" {
			env = append(env, kv)
		}
	}
	sort.Strings(env)
	fmt.Fprintf(s.o.Out, "  env       %s\n", strings.Join(env, " "))
}

// Instances names the replicas with their proxy admin addresses.
func (s *Set) Instances() map[string]string {
	m := map[string]string{}
	for _, in := range s.current() {
		m[in.name] = in.admin
	}
	return m
}

// exit is a replica's application or proxy ending (what: "application",
// "proxy"), or a restart failing to start it ("start").
type exit struct {
	in   *instance
	what string
	err  error
}

// watch reports in's first exit on exits, unless ctx ends first.
func watch(ctx context.Context, in *instance, exits chan<- exit) {
	select {
	case err := <-in.appC:
		in.appC <- err
		exits <- exit{in, "application", err}
	case err := <-in.proxyC:
		in.proxyC <- err
		exits <- exit{in, "proxy", err}
	case <-ctx.Done():
	}
}

// Wait supervises the replicas until ctx ends or all have exited for good:
// a replica whose application or proxy exits is stopped and, as the
// restart policy says, started again after a backoff (1 s, doubling to
// 1 min with every exit in a row).
func (s *Set) Wait(ctx context.Context) error {
	exits := make(chan exit, 2*len(s.instances))
	for _, in := range s.current() {
		go watch(ctx, in, exits)
	}
	live := len(s.instances)
	var firstErr error
	for live > 0 {
		select {
		case <-ctx.Done():
			s.Stop()
			return nil
		case e := <-exits:
			e.in.stop()
			if !s.o.restarts(e.err) {
				live--
				fmt.Fprintf(s.o.Err, "%s: %s exited (%v); the replica is stopped (--restart %s)\n", e.in.name, e.what, describeExit(e.err), s.o.Restart)
				if e.err != nil && firstErr == nil {
					firstErr = fmt.Errorf("%s: %s: %w", e.in.name, e.what, e.err)
				}
				continue
			}
			delay, inARow := e.in.backoff()
			fmt.Fprintf(s.o.Err, "%s: %s exited (%v); restarting it in %v\n", e.in.name, e.what, describeExit(e.err), delay)
			go s.restart(ctx, s.next(e.in, e.err, inARow), delay, exits)
		}
	}
	return firstErr
}

// current is the replicas running now.
func (s *Set) current() []*instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*instance(nil), s.instances...)
}

func describeExit(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// Stop stops every replica, all at once, and cleans up.
func (s *Set) Stop() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range s.current() {
		wg.Go(in.stop)
	}
	wg.Wait()
}
