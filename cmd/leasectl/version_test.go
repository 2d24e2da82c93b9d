package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client/clienttest"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/internal/buildinfo"
)

func TestVersion(t *testing.T) {
	client := fmt.Sprintf("Client Version: %s, raft command version %d, snapshot format %d\n", buildinfo.Get(), fsm.CommandVersion, fsm.SnapshotFormat)

	srv := clienttest.Start(t)
	srv.SetStatus(&pb.StatusResponse{Id: "n2", Build: &pb.BuildInfo{Version: "v0.2.0", Commit: "abc", GoVersion: "go1.99", CommandVersion: 3, SnapshotFormat: 2}})
	out := mustRun(t, srv, exitOK, "version")
	if want := client + "Server Version: v0.2.0 (commit abc, go1.99), raft command version 3, snapshot format 2 (node n2)\n"; out != want {
		t.Errorf("version:\n got %q\nwant %q", out, want)
	}
	out = mustRun(t, srv, exitOK, "version", "-o", "json")
	var v versionJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version -o json: %v\n%s", err, out)
	}
	if v.Client.Version != buildinfo.Get().Version || v.Server == nil || v.Server.Version != "v0.2.0" || v.Server.Node != "n2" || v.Server.SnapshotFormat != 2 {
		t.Errorf("version -o json: %+v", v)
	}

	// A server from before version reporting answers Status without it.
	old := clienttest.Start(t)
	old.SetStatus(&pb.StatusResponse{Id: "n1"})
	out = mustRun(t, old, exitOK, "version")
	if want := client + "Server Version: unknown (the server predates version reporting) (node n1)\n"; out != want {
		t.Errorf("version against an older server:\n got %q\nwant %q", out, want)
	}

	calls := srv.Calls("Status")
	if out := mustRun(t, srv, exitOK, "version", "--client"); out != client {
		t.Errorf("version --client: %q, want %q", out, client)
	}
	if srv.Calls("Status") != calls {
		t.Error("version --client asked the server")
	}

	srv.Inject("Status", clienttest.Unavailable)
	out, errOut, code := leasectl(t, srv, "version", "--timeout", "1s")
	if code != exitError || out != client || errOut == "" || strings.Count(errOut, "\n") != 1 {
		t.Errorf("version with no server: exit %d, stdout %q, stderr %q; want 1, the client's version and one error line", code, out, errOut)
	}
}
