package fencedstore_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/leasekeeper/leasekeeper/examples/fencedstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStore(t *testing.T) {
	srv := httptest.NewServer(fencedstore.New())
	defer srv.Close()
	hc := srv.Client()
	ctx := context.Background()

	tests := []struct {
		name      string
		value     string
		token     uint64
		wantStale bool
	}{
		{name: "first holder", value: "a", token: 5},
		{name: "same holder again", value: "b", token: 5},
		{name: "newer holder", value: "c", token: 9},
		{name: "paused old holder", value: "d", token: 5, wantStale: true},
	}
	for _, tt := range tests {
		err := fencedstore.Put(ctx, hc, srv.URL, "k", tt.value, tt.token)
		if tt.wantStale != errors.Is(err, fencedstore.ErrStale) || (!tt.wantStale && err != nil) {
			t.Fatalf("%s: Put(%q, %d) = %v, want stale %v", tt.name, tt.value, tt.token, err, tt.wantStale)
		}
	}
	v, tok, err := fencedstore.Get(ctx, hc, srv.URL, "k")
	if err != nil || v != "c" || tok != 9 {
		t.Fatalf("Get = %q, %d, %v; want c, 9", v, tok, err)
	}
	if _, _, err := fencedstore.Get(ctx, hc, srv.URL, "missing"); err == nil {
		t.Fatal("Get of a missing key succeeded")
	}

	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/values/k", strings.NewReader("x"))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("PUT without a token: %s, want 400", resp.Status)
	}
}
