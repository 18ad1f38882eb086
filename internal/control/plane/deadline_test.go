package plane

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// slowService answers UnaryCall DEADLINE_EXCEEDED when its call's deadline
// is about to pass (a server busy past the client's deadline), telling the time it was
// given (grpc-timeout, as gRPC turns it into the call's deadline);
// EmptyCall at once.
type slowService struct {
	testpb.UnimplementedTestServiceServer
	given chan time.Duration
}

func (s *slowService) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Now().Add(time.Hour)
	}
	select {
	case s.given <- time.Until(d):
	default:
	}
	// Give up just before the deadline, as a server whose own calls carry
	// the propagated deadline does: the answer beats the client's cancel.
	time.Sleep(time.Until(d) - 3*time.Millisecond)
	return nil, status.Error(codes.DeadlineExceeded, "ran out of time")
}

func (s *slowService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

// gRPC calls whose deadline runs out are what they are: DEADLINE_EXCEEDED
// to the client, the server told the deadline (grpc-timeout, no more than
// the client's), and no endpoint blamed — twenty in a row (ten each, more
// than the seven failures that eject one) eject neither instance, and the
// service answers at once afterwards.
func TestExpiredDeadlinesAreNotEndpointFailures(t *testing.T) {
	p, api := startPlane(t)
	svc := &slowService{given: make(chan time.Duration, 100)}
	for _, name := range []string{"slow-0", "slow-1"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		testpb.RegisterTestServiceServer(srv, svc)
		go srv.Serve(ln)
		t.Cleanup(srv.Stop)
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		proxy(t, p, api, "slow", "--app-addr="+ln.Addr().String(), "--workload="+name, "--service=slow", "--service-port=8080="+port+"/grpc")
	}
	waitWorkloads(t, api, 2)
	addr, admin := clientProxy(t, p, api, "slow")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := testpb.NewTestServiceClient(conn)
	warm, cancelWarm := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelWarm()
	if _, err := tc.EmptyCall(warm, &testpb.Empty{}); err != nil { // discovery and connections in place
		t.Fatal(err)
	}
	const calls, deadline = 20, 200 * time.Millisecond
	for i := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{})
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("call %d: %v; want DeadlineExceeded", i, err)
		}
	}
	// A call may run out of time before it reaches a server (on a busy
	// machine), or reach it with no time left; most reach one with time.
	n := len(svc.given)
	if n < calls*3/4 {
		t.Fatalf("only %d of the %d calls reached a server", n, calls)
	}
	for range n {
		if d := <-svc.given; d > deadline {
			t.Fatalf("the server was given %v; want the time left of the client's %v", d, deadline)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for range 10 {
		if _, err := tc.EmptyCall(ctx, &testpb.Empty{}); err != nil {
			t.Fatalf("after the expired calls: %v", err)
		}
	}
	resp, err := http.Get("http://" + admin + "/debug/decisions?n=1024")
	if err != nil {
		t.Fatal(err)
	}
	decisions, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(decisions), `"ejected"`) {
		t.Errorf("an endpoint was ejected for calls whose deadline ran out:\n%s", decisions)
	}
}
