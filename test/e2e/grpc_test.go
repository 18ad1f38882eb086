package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// blockKey makes UnaryCall wait until its context ends.
const blockKey = "x-e2e-block"

// serverEvent is a server handler's context error and when it saw it.
type serverEvent struct {
	err error
	at  time.Time
}

// testService implements the gRPC interop TestService.
type testService struct {
	testpb.UnimplementedTestServiceServer
	// blocked receives the context error of a call that blocked (blockKey).
	blocked chan serverEvent
	// duplexEnded receives the context error of a FullDuplexCall whose
	// client went away.
	duplexEnded chan serverEvent
}

func servePayload(size int32) *testpb.Payload {
	return &testpb.Payload{Type: testpb.PayloadType_COMPRESSABLE, Body: pattern(int(size))}
}

// UnaryCall answers with a payload of the requested size, the sha256 of the
// request payload as ServerId, the requested status (with details and
// trailers), and echoes the interop metadata keys.
func (s *testService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-grpc-test-echo-initial"); len(v) > 0 {
		grpc.SetHeader(ctx, metadata.Pairs("x-grpc-test-echo-initial", v[0]))
	}
	if v := md.Get("x-grpc-test-echo-trailing-bin"); len(v) > 0 {
		grpc.SetTrailer(ctx, metadata.Pairs("x-grpc-test-echo-trailing-bin", v[0]))
	}
	if len(md.Get(blockKey)) > 0 {
		<-ctx.Done()
		s.blocked <- serverEvent{ctx.Err(), time.Now()}
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if st := req.GetResponseStatus(); st.GetCode() != 0 {
		withDetails, err := status.New(codes.Code(st.GetCode()), st.GetMessage()).WithDetails(errorDetail)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "details: %v", err)
		}
		grpc.SetTrailer(ctx, errorTrailer)
		return nil, withDetails.Err()
	}
	return &testpb.SimpleResponse{
		Payload:  servePayload(req.GetResponseSize()),
		ServerId: sha(req.GetPayload().GetBody()),
	}, nil
}

var (
	errorDetail  = &errdetails.ErrorInfo{Reason: "E2E_TEST", Domain: "trellis.test", Metadata: map[string]string{"k": "v"}}
	errorTrailer = metadata.Pairs("x-e2e-trailer", "kept", "x-e2e-trailer-bin", string([]byte{0, 1, 2, 0xfe, 0xff}))
)

func (s *testService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		if us := p.GetIntervalUs(); us > 0 {
			time.Sleep(time.Duration(us) * time.Microsecond) // the interop test's requested pacing
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: servePayload(p.GetSize())}); err != nil {
			return err
		}
	}
	return nil
}

func (s *testService) StreamingInputCall(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	var sum int32
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: sum})
		}
		if err != nil {
			return err
		}
		sum += int32(len(req.GetPayload().GetBody()))
	}
}

func (s *testService) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			ctx := stream.Context()
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
			select {
			case s.duplexEnded <- serverEvent{ctx.Err(), time.Now()}:
			default:
			}
			return err
		}
		for _, p := range req.GetResponseParameters() {
			if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: servePayload(p.GetSize())}); err != nil {
				return err
			}
		}
	}
}

func serveGRPC(t *testing.T, ln net.Listener) *testService {
	t.Helper()
	svc := &testService{blocked: make(chan serverEvent, 1), duplexEnded: make(chan serverEvent, 1)}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, svc)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return svc
}

// TestGRPC runs grpc-go against the interop TestService through both
// proxies: every call shape, rich errors with trailers, deadlines and
// cancellation.
func TestGRPC(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		tp := newTopology(t, mode, grpcBackend)
		svc := serveGRPC(t, tp.ln[grpcBackend.name])
		through := tp.through(t, grpcBackend, "request_total")
		conn, err := grpc.NewClient("passthrough:///"+tp.addr[grpcBackend.name],
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return tp.dialer.DialContext(ctx, "tcp", addr)
			}))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		client := testpb.NewTestServiceClient(conn)
		ctx := func(t *testing.T) context.Context {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			t.Cleanup(cancel)
			return ctx
		}

		t.Run("unary", func(t *testing.T) {
			reqBody := pattern(256 << 10)
			ctx := metadata.AppendToOutgoingContext(ctx(t),
				"x-grpc-test-echo-initial", "initial-value",
				"x-grpc-test-echo-trailing-bin", string([]byte{0xab, 0xab, 0xab}))
			var header, trailer metadata.MD
			resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{
				ResponseType: testpb.PayloadType_COMPRESSABLE,
				ResponseSize: 512 << 10,
				Payload:      &testpb.Payload{Body: reqBody},
			}, grpc.Header(&header), grpc.Trailer(&trailer))
			if err != nil {
				t.Fatalf("UnaryCall: %v", err)
			}
			if !bytes.Equal(resp.GetPayload().GetBody(), pattern(512<<10)) {
				t.Errorf("response payload: %d bytes, not the %d the server sent", len(resp.GetPayload().GetBody()), 512<<10)
			}
			if resp.GetServerId() != sha(reqBody) {
				t.Errorf("server received a request payload with sha256 %s, want %s", resp.GetServerId(), sha(reqBody))
			}
			if got := header.Get("x-grpc-test-echo-initial"); len(got) != 1 || got[0] != "initial-value" {
				t.Errorf("initial metadata echo = %q, want [initial-value]", got)
			}
			if got := trailer.Get("x-grpc-test-echo-trailing-bin"); len(got) != 1 || got[0] != "\xab\xab\xab" {
				t.Errorf("trailing binary metadata echo = %q, want [\\xab\\xab\\xab]", got)
			}
		})

		t.Run("server-streaming", func(t *testing.T) {
			sizes := []int32{31415, 9, 2653, 58979, 1, 0, 1 << 20}
			req := &testpb.StreamingOutputCallRequest{}
			for _, s := range sizes {
				req.ResponseParameters = append(req.ResponseParameters, &testpb.ResponseParameters{Size: s, IntervalUs: 1000})
			}
			stream, err := client.StreamingOutputCall(ctx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range sizes {
				resp, err := stream.Recv()
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				if !bytes.Equal(resp.GetPayload().GetBody(), pattern(int(s))) {
					t.Errorf("response %d: %d bytes, want the server's %d", i, len(resp.GetPayload().GetBody()), s)
				}
			}
			if _, err := stream.Recv(); err != io.EOF {
				t.Errorf("after the last response: %v, want io.EOF", err)
			}
		})

		t.Run("client-streaming", func(t *testing.T) {
			stream, err := client.StreamingInputCall(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			var want int32
			for _, s := range []int{27182, 8, 1828, 45904, 1 << 20} {
				want += int32(s)
				if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: pattern(s)}}); err != nil {
					t.Fatalf("Send: %v", err)
				}
			}
			resp, err := stream.CloseAndRecv()
			if err != nil {
				t.Fatalf("CloseAndRecv: %v", err)
			}
			if resp.GetAggregatedPayloadSize() != want {
				t.Errorf("server counted %d bytes, want %d", resp.GetAggregatedPayloadSize(), want)
			}
		})

		t.Run("bidi-streaming", func(t *testing.T) {
			stream, err := client.FullDuplexCall(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			// Ping-pong: each response must arrive before the next request
			// is sent, so nothing may be held back in either direction.
			for i, s := range []int32{31415, 9, 2653, 58979, 0, 300000} {
				if err := stream.Send(&testpb.StreamingOutputCallRequest{
					ResponseParameters: []*testpb.ResponseParameters{{Size: s}},
					Payload:            &testpb.Payload{Body: pattern(int(s) / 2)},
				}); err != nil {
					t.Fatalf("Send %d: %v", i, err)
				}
				resp, err := stream.Recv()
				if err != nil {
					t.Fatalf("Recv %d: %v", i, err)
				}
				if len(resp.GetPayload().GetBody()) != int(s) {
					t.Fatalf("response %d: %d bytes, want %d", i, len(resp.GetPayload().GetBody()), s)
				}
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); err != io.EOF {
				t.Errorf("after CloseSend: %v, want io.EOF", err)
			}
		})

		t.Run("status-details-trailers", func(t *testing.T) {
			var trailer metadata.MD
			_, err := client.UnaryCall(ctx(t), &testpb.SimpleRequest{
				ResponseStatus: &testpb.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "precondition failed: ünïcødé \t%25 message"},
			}, grpc.Trailer(&trailer))
			st, ok := status.FromError(err)
			if !ok || st.Code() != codes.FailedPrecondition {
				t.Fatalf("got %v, want a FailedPrecondition status", err)
			}
			if want := "precondition failed: ünïcødé \t%25 message"; st.Message() != want {
				t.Errorf("status message %q, want %q", st.Message(), want)
			}
			details := st.Details()
			if len(details) != 1 {
				t.Fatalf("status details %v, want one ErrorInfo", details)
			}
			if info, ok := details[0].(*errdetails.ErrorInfo); !ok || !proto.Equal(info, errorDetail) {
				t.Errorf("status detail %v, want %v", details[0], errorDetail)
			}
			for key, want := range map[string]string{"x-e2e-trailer": "kept", "x-e2e-trailer-bin": "\x00\x01\x02\xfe\xff"} {
				if got := trailer.Get(key); len(got) != 1 || got[0] != want {
					t.Errorf("trailer %s = %q, want [%q]", key, got, want)
				}
			}
		})

		t.Run("deadline", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(t.Context(), blockKey, "1"), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
			if code := status.Code(err); code != codes.DeadlineExceeded {
				t.Errorf("got %v, want DeadlineExceeded", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("the 300ms deadline took %v to expire", d)
			}
			select {
			case ev := <-svc.blocked:
				if ev.err == nil {
					t.Errorf("server context not done")
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the server's context did not end within 3s of the client's deadline")
			}
		})

		t.Run("bidi-cancel", func(t *testing.T) {
			ctx, cancel := context.WithCancel(ctx(t))
			defer cancel()
			stream, err := client.FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// One round trip proves the stream is open end to end.
			if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 10}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			cancel()
			select {
			case ev := <-svc.duplexEnded:
				if !errors.Is(ev.err, context.Canceled) {
					t.Errorf("server saw %v, want context.Canceled", ev.err)
				}
				if d := ev.at.Sub(start); d > time.Second {
					t.Errorf("server saw the cancellation after %v, want within 1s", d)
				}
			case <-time.After(time.Second):
				t.Fatal("the server did not see the client's cancellation within 1s")
			}
		})
		through()
	})
}
