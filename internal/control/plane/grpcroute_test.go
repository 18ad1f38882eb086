package plane

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// backendService answers every call with its name in the x-backend header.
type backendService struct {
	testpb.UnimplementedTestServiceServer
	name string
}

func (b *backendService) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	grpc.SetHeader(ctx, metadata.Pairs("x-backend", b.name))
	return &testpb.Empty{}, nil
}

func (b *backendService) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	grpc.SetHeader(ctx, metadata.Pairs("x-backend", b.name))
	return &testpb.SimpleResponse{}, nil
}

// A GRPCRoute sends one method to another backend; the rest of the
// service, and requests no rule matches, behave as the route says.
func TestGRPCRouteMethodMatching(t *testing.T) {
	p, api := startPlane(t)
	for _, name := range []string{"grpc-a", "grpc-b"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		testpb.RegisterTestServiceServer(srv, &backendService{name: name})
		go srv.Serve(ln)
		t.Cleanup(srv.Stop)
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		proxy(t, p, api, name, "--app-addr="+ln.Addr().String(), "--workload="+name+"-0", "--service="+name, "--service-port=8080="+port+"/grpc")
	}
	apply(t, api, `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: grpc, namespace: default}
spec: {ports: [{port: 8080, protocol: grpc}]}`, `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: default}
spec:
  parentRefs: [{kind: Service, name: grpc, port: 8080}]
  rules:
  - matches: [{method: {service: grpc.testing.TestService, method: UnaryCall}}]
    backendRefs: [{name: grpc-b, port: 8080}]
  - matches: [{method: {service: grpc.testing.TestService, method: EmptyCall}}]
    backendRefs: [{name: grpc-a, port: 8080}]`)
	conn, err := grpc.NewClient(client(t, p, api, "grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := testpb.NewTestServiceClient(conn)
	backendOf := func(call func(ctx context.Context, md *metadata.MD) error) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var md metadata.MD
		err := call(ctx, &md)
		if v := md.Get("x-backend"); len(v) > 0 {
			return v[0], err
		}
		return "", err
	}
	unary := func(ctx context.Context, md *metadata.MD) error {
		_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(md))
		return err
	}
	empty := func(ctx context.Context, md *metadata.MD) error {
		_, err := tc.EmptyCall(ctx, &testpb.Empty{}, grpc.Header(md))
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := backendOf(unary)
		if err == nil && b == "grpc-b" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("UnaryCall never reached grpc-b: %q, %v", b, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	for range 20 {
		if b, err := backendOf(unary); err != nil || b != "grpc-b" {
			t.Fatalf("UnaryCall: %q, %v", b, err)
		}
		if b, err := backendOf(empty); err != nil || b != "grpc-a" {
			t.Fatalf("EmptyCall: %q, %v", b, err)
		}
	}
	// A method no rule matches: the mesh answers UNIMPLEMENTED.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := tc.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("an unrouted method: %v; want UNIMPLEMENTED from the mesh", err)
	}
}

// flakyService fails half its calls with UNAVAILABLE (a trailers-only response).
type flakyService struct {
	testpb.UnimplementedTestServiceServer
	calls atomic.Int64
}

func (f *flakyService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if f.calls.Add(1)%2 == 0 {
		return nil, status.Error(codes.Unavailable, "flaky")
	}
	return &testpb.SimpleResponse{Payload: req.Payload}, nil
}

// gRPC requests have no Content-Length: the body is recorded as the first
// attempt streams it, and replayed for the retries a GRPCRoute asks for.
func TestGRPCRetries(t *testing.T) {
	p, api := startPlane(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyService{}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, flaky)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	proxy(t, p, api, "flaky", "--app-addr="+ln.Addr().String(), "--workload=flaky-0", "--service=flaky", "--service-port=8080="+port+"/grpc",
		"--failure-accrual=off")
	apply(t, api, `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: flaky
  namespace: default
  annotations: {retry.trellis.dev/grpc: unavailable, retry.trellis.dev/limit: "5", retry.trellis.dev/budget-ratio: "100%"}
spec:
  parentRefs: [{kind: Service, name: flaky}]
  rules: [{}]`)
	local := testkit.FreeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	proxy(t, p, api, "client", "--upstream=up="+lport+":flaky.default.svc.cluster.local:8080", "--failure-accrual=off")
	conn, err := grpc.NewClient(local, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := testpb.NewTestServiceClient(conn)
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}})
		if err == nil && string(resp.GetPayload().GetBody()) != "hello" {
			return fmt.Errorf("the replayed request lost its body: %q", resp.GetPayload().GetBody())
		}
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for ok := 0; ok < 20; { // until the route is in place: 20 successes in a row
		if call() != nil {
			ok = 0
			if time.Now().After(deadline) {
				t.Fatal("retries never took effect")
			}
			continue
		}
		ok++
	}
	flaky.calls.Store(0)
	for range 200 {
		if err := call(); err != nil {
			t.Fatalf("with retries a call failed: %v", err)
		}
	}
	if n := flaky.calls.Load(); n < 300 {
		t.Errorf("%d backend calls for 200 requests; every other one should have been retried", n)
	}
}
