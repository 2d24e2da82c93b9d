package k8sapi_test

import (
	"log"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/k8sapi"
)

// A node serves the Lease API with a client of its own gRPC address; then
// kubectl --server http://127.0.0.1:6443 get leases -A works, and so does
// client-go with rest.Config{Host: "http://127.0.0.1:6443"}.
func ExampleNewHandler() {
	conn, err := grpc.NewClient("127.0.0.1:7001", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	cfg := k8sapi.DefaultConfig()
	cfg.Client = pb.NewLeasesClient(conn)
	h, err := k8sapi.NewHandler(cfg)
	if err != nil {
		log.Fatal(err)
	}
	// No WriteTimeout: watches stream for as long as they last.
	srv := &http.Server{Addr: "127.0.0.1:6443", Handler: h, ReadHeaderTimeout: 5 * time.Second}
	_ = srv // srv.ListenAndServe()
}
