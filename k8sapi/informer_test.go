package k8sapi_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/k8sapi"
)

// An informer (list, then watch from the list's resourceVersion, or the
// WatchList protocol, whichever client-go uses) sees the leases.
func TestInformer(t *testing.T) {
	e := setup(t)
	e.do("POST", leasesPath+"default/leases", newLease("before", "", 0)).lease(t, http.StatusCreated)
	factory := informers.NewSharedInformerFactory(e.clientset(), 0)
	inf := factory.Coordination().V1().Leases().Informer()
	seen := make(chan string, 10)
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { seen <- "add " + obj.(*coordinationv1.Lease).Name },
		UpdateFunc: func(_, obj any) {
			if l := obj.(*coordinationv1.Lease); l.Spec.HolderIdentity != nil {
				seen <- "update " + l.Name + " " + *l.Spec.HolderIdentity
			}
		},
		DeleteFunc: func(obj any) { seen <- "delete " + obj.(*coordinationv1.Lease).Name },
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer factory.Shutdown()
	defer close(stop)
	factory.Start(stop)
	if !cache.WaitForCacheSync(stop, inf.HasSynced) {
		t.Fatal("no sync")
	}
	leases := e.clientset().CoordinationV1().Leases("default")
	l, err := leases.Create(ctx(t), newLease("after", "a", 30), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l.Spec.HolderIdentity = ptr("b")
	if _, err := leases.Update(ctx(t), l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := leases.Delete(ctx(t), "after", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"add before", "add after", "update after b", "delete after"} {
		select {
		case got := <-seen:
			if got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %q", want)
		}
	}
}

// recording remembers the metadata of the calls it answers with NotFound.
type recording struct {
	pb.LeasesClient
	md chan metadata.MD
}

func (r recording) Get(ctx context.Context, _ *pb.GetRequest, _ ...grpc.CallOption) (*pb.GetResponse, error) {
	md, _ := metadata.FromOutgoingContext(ctx)
	r.md <- md
	return nil, status.Error(codes.NotFound, "no")
}

func TestCredentialsPassThrough(t *testing.T) {
	rec := recording{md: make(chan metadata.MD, 1)}
	cfg := k8sapi.DefaultConfig()
	cfg.Client = rec
	h, err := k8sapi.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req := httptestRequest(t, "GET", leasesPath+"default/leases/x", "")
	req.Header.Set("Authorization", "Bearer s3cret")
	req.RemoteAddr = "127.0.0.1:40000"
	if code := serve(h, req).Code; code != http.StatusNotFound {
		t.Fatalf("code %d", code)
	}
	if got := (<-rec.md).Get("authorization"); len(got) != 1 || got[0] != "Bearer s3cret" {
		t.Fatalf("authorization metadata %v", got)
	}
	// From another host over plain HTTP the token is refused, and never
	// passed on.
	req = httptestRequest(t, "GET", leasesPath+"default/leases/x", "")
	req.Header.Set("Authorization", "Bearer s3cret")
	req.RemoteAddr = "192.0.2.7:40000"
	if code := serve(h, req).Code; code != http.StatusBadRequest {
		t.Fatalf("a token over plain HTTP from another host: code %d, want 400", code)
	}
	select {
	case md := <-rec.md:
		t.Fatalf("the refused token reached the service: %v", md)
	default:
	}
}

// TestImpossibleNamespaceWatchAuthenticates: a watch of a namespace that
// cannot exist is held open only for a caller the service accepts.
func TestImpossibleNamespaceWatchAuthenticates(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer codes.Code
		want   int
	}{
		{"refused caller", codes.Unauthenticated, http.StatusUnauthorized},
		{"accepted caller", codes.InvalidArgument, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := k8sapi.DefaultConfig()
			cfg.Client = answering{code: tc.answer}
			h, err := k8sapi.NewHandler(cfg)
			if err != nil {
				t.Fatal(err)
			}
			req := httptestRequest(t, "GET", leasesPath+"Not_A_Namespace/leases?watch=true&timeoutSeconds=1", "")
			if code := serve(h, req).Code; code != tc.want {
				t.Fatalf("code %d, want %d", code, tc.want)
			}
		})
	}
}

// answering answers every Get with code.
type answering struct {
	pb.LeasesClient
	code codes.Code
}

func (a answering) Get(context.Context, *pb.GetRequest, ...grpc.CallOption) (*pb.GetResponse, error) {
	return nil, status.Error(a.code, "answer")
}
