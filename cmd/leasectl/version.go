package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/internal/buildinfo"
)

// buildJSON is one binary in version -o json|yaml.
type buildJSON struct {
	Version        string `json:"version"`
	Commit         string `json:"commit,omitempty"`
	GoVersion      string `json:"goVersion,omitempty"`
	CommandVersion uint32 `json:"commandVersion,omitempty"`
	SnapshotFormat uint32 `json:"snapshotFormat,omitempty"`
	// Node is the member that answered, for the server.
	Node string `json:"node,omitempty"`
}

type versionJSON struct {
	Client buildJSON  `json:"client"`
	Server *buildJSON `json:"server,omitempty"`
}

// unknownVersion is the server version of a node that does not report it.
const unknownVersion = "unknown (the server predates version reporting)"

func (a *app) versionCmd() *cobra.Command {
	var (
		clientOnly bool
		output     string
	)
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the versions of leasectl and of the node it reaches",
		Long: `Show the version of leasectl and of the node it reaches (the first of
--endpoints that answers), with the Raft command version and snapshot format
each reads. --client shows leasectl's alone, without a server.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, outTable, outJSON, outYAML); err != nil {
				return err
			}
			bi := buildinfo.Get()
			v := versionJSON{Client: buildJSON{Version: bi.Version, Commit: bi.Commit, GoVersion: bi.GoVersion,
				CommandVersion: fsm.CommandVersion, SnapshotFormat: fsm.SnapshotFormat}}
			var callErr error
			if !clientOnly {
				var st *pb.StatusResponse
				callErr = a.call(func(ctx context.Context, c *client.Client) error {
					var err error
					st, err = c.Status(ctx)
					return err
				})
				if callErr == nil {
					sb := st.GetBuild()
					v.Server = &buildJSON{Version: sb.GetVersion(), Commit: sb.GetCommit(), GoVersion: sb.GetGoVersion(),
						CommandVersion: sb.GetCommandVersion(), SnapshotFormat: sb.GetSnapshotFormat(), Node: st.GetId()}
					if sb == nil {
						v.Server.Version = unknownVersion
					}
				}
			}
			// The client's version is printed even when no server answers,
			// as kubectl does.
			if err := a.writeVersion(output, v); err != nil {
				return err
			}
			return callErr
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "show leasectl's version only; reach no server")
	cmd.Flags().StringVarP(&output, "output", "o", outTable, "output format: table|json|yaml")
	return cmd
}

func (a *app) writeVersion(output string, v versionJSON) error {
	if output != outTable {
		return writeObject(a.stdout, output, v)
	}
	line := func(b buildJSON) string {
		s := buildinfo.Info{Version: b.Version, Commit: b.Commit, GoVersion: b.GoVersion}.String()
		if b.Version == unknownVersion {
			s = b.Version
		}
		if b.CommandVersion != 0 {
			s += fmt.Sprintf(", raft command version %d, snapshot format %d", b.CommandVersion, b.SnapshotFormat)
		}
		return s
	}
	if _, err := fmt.Fprintf(a.stdout, "Client Version: %s\n", line(v.Client)); err != nil {
		return err
	}
	if v.Server != nil {
		_, err := fmt.Fprintf(a.stdout, "Server Version: %s (node %s)\n", line(*v.Server), v.Server.Node)
		return err
	}
	return nil
}
