package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leasekeeper/leasekeeper/client/clienttest"
)

// TestErrorLines: each error is one line that names the status and the
// object, without the packages' prefixes.
func TestErrorLines(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Inject("Delete", func(context.Context) error {
		return status.Error(codes.PermissionDenied, "auth: permission denied: alice may not delete leases in default")
	})
	srv.Inject("Status", func(context.Context) error {
		return status.Error(codes.Unavailable, "transport: no leader known")
	})
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"not found", []string{"get", "lease", "nope"}, `Error from server (NotFound): lease "default/nope" not found`},
		{"not found in a namespace", []string{"-n", "jobs", "describe", "lease", "gone"}, `Error from server (NotFound): lease "jobs/gone" not found`},
		{"renew of a missing lease", []string{"renew", "nope", "--holder", "a", "--token", "1"}, `Error from server (NotFound): lease "default/nope" not found`},
		{"denied", []string{"delete", "lease", "db"}, `Error from server (PermissionDenied): lease "default/db": permission denied: alice may not delete leases in default`},
		{"no object", []string{"cluster", "status", "--timeout", "1s"}, `Unable to reach the cluster (`},
		{"usage", []string{"acquire", "db"}, `leasectl: --holder is required`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := leasectl(t, srv, tc.args...)
			if code == exitOK {
				t.Fatal("exit 0, want an error")
			}
			if !strings.HasPrefix(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr %q, want one line starting %q", errOut, tc.want)
			}
			for _, prefix := range []string{"client: ", "fsm: ", "auth: ", "transport: "} {
				if strings.Contains(errOut, prefix) {
					t.Errorf("stderr %q keeps the package prefix %q", errOut, prefix)
				}
			}
		})
	}
}

func TestErrorLineWithoutStatus(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{errors.New("client: holding lost"), "leasectl: holding lost"},
		{onObject(errors.New("client: holding lost"), "lease", "default/db"), `leasectl: lease "default/db": holding lost`},
		{fmt.Errorf("wrapped: %w", status.Error(codes.FailedPrecondition, "fsm: not the current holding")), "Error from server (FailedPrecondition): not the current holding"},
		{status.Error(codes.Canceled, "context canceled"), "leasectl: context canceled"},
	}
	for _, tc := range tests {
		if got := errorLine(tc.err); got != tc.want {
			t.Errorf("errorLine(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
