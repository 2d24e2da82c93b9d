package transport_test

import (
	"net"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/internal/buildinfo"
	"github.com/leasekeeper/leasekeeper/node/nodetest"
	"github.com/leasekeeper/leasekeeper/transport"
)

// serveOne serves a one-node cluster's gRPC API on loopback with cfg and
// returns a connection to it.
func serveOne(t *testing.T, cfg transport.Config) *grpc.ClientConn {
	t.Helper()
	c := nodetest.New(t, 1, clock.New(), nodetest.Options{})
	nd := c.Nodes[0]
	srv, err := transport.New(cfg, nd, transport.NewHub(cfg.WatchWindow, cfg.WatchBuffer), nodetest.Logger(t, "srv"), nil)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(srv.ServerOptions()...)
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		g.Stop()
		<-done
		_ = srv.Close()
	})
	return cc
}

// reflect sends one request on a reflection stream, as grpcurl does, and
// returns the answer.
func reflect(t *testing.T, cc *grpc.ClientConn, req *reflectionpb.ServerReflectionRequest) (*reflectionpb.ServerReflectionResponse, error) {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx(t))
	if err != nil {
		return nil, err
	}
	if err := stream.Send(req); err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	_ = stream.CloseSend()
	return resp, err
}

// TestReflectionListsServices: with reflection on (the default) a client
// lists the services, as `grpcurl -plaintext ADDR list` does, and gets the
// descriptors of the API to describe and call it; with it off the
// reflection service is not there.
func TestReflectionListsServices(t *testing.T) {
	cc := serveOne(t, transport.DefaultConfig())
	resp, err := reflect(t, cc, &reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}})
	if err != nil {
		t.Fatalf("list services: %v", err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"leasekeeper.v1.Leases", "leasekeeper.v1.Cluster", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("services %v lack %s", names, want)
		}
	}
	resp, err = reflect(t, cc, &reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "leasekeeper.v1.Leases"}})
	if err != nil {
		t.Fatalf("file containing leasekeeper.v1.Leases: %v", err)
	}
	if len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("no descriptor for leasekeeper.v1.Leases: %v", resp)
	}

	cfg := transport.DefaultConfig()
	cfg.Reflection = false
	_, err = reflect(t, serveOne(t, cfg), &reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("reflection off: %v, want Unimplemented", err)
	}
}

// TestStatusReportsBuild: Status names the node's binary, with the formats
// it reads.
func TestStatusReportsBuild(t *testing.T) {
	cc := serveOne(t, transport.DefaultConfig())
	st, err := pb.NewClusterClient(cc).Status(ctx(t), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bi, want := st.GetBuild(), buildinfo.Get()
	if bi.GetVersion() != want.Version || bi.GetCommit() != want.Commit || bi.GetGoVersion() != want.GoVersion ||
		bi.GetCommandVersion() != fsm.CommandVersion || bi.GetSnapshotFormat() != fsm.SnapshotFormat {
		t.Errorf("build %v, want %+v, command version %d, snapshot format %d", bi, want, fsm.CommandVersion, fsm.SnapshotFormat)
	}
	if bi.GetVersion() == "" || bi.GetGoVersion() == "" {
		t.Errorf("build %v: version and Go version must be set", bi)
	}
}
