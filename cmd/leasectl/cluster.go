package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

// statusJSON is cluster status -o json: the documented fields first, then
// what the answering node adds.
type statusJSON struct {
	Leader         string       `json:"leader"`
	Term           uint64       `json:"term"`
	CommitIndex    uint64       `json:"commitIndex"`
	AppliedIndex   uint64       `json:"appliedIndex"`
	Members        []memberJSON `json:"members"`
	LeaderGRPCAddr string       `json:"leaderGrpcAddr,omitempty"`
	Node           string       `json:"node"`
	State          string       `json:"state"`
	Revision       uint64       `json:"revision"`
	Leases         int64        `json:"leases"`
}

type memberJSON struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raftAddr"`
	GRPCAddr string `json:"grpcAddr"`
	Suffrage string `json:"suffrage"`
	State    string `json:"state"`
	// CommandVersion: 0 from a server that does not report it.
	CommandVersion uint32 `json:"commandVersion,omitempty"`
}

func newStatusJSON(st *pb.StatusResponse) statusJSON {
	j := statusJSON{
		Leader:         st.GetLeader(),
		Term:           st.GetTerm(),
		CommitIndex:    st.GetCommitIndex(),
		AppliedIndex:   st.GetAppliedIndex(),
		Members:        []memberJSON{},
		LeaderGRPCAddr: st.GetLeaderGrpcAddr(),
		Node:           st.GetId(),
		State:          st.GetState(),
		Revision:       st.GetRevision(),
		Leases:         st.GetLeases(),
	}
	for _, m := range st.GetMembers() {
		j.Members = append(j.Members, memberJSON{
			ID: m.GetId(), RaftAddr: m.GetRaftAddr(), GRPCAddr: m.GetGrpcAddr(),
			Suffrage: m.GetSuffrage(), State: m.GetState(), CommandVersion: m.GetCommandVersion(),
		})
	}
	return j
}

func (a *app) clusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Report on the cluster",
		Args:  groupArgs,
		RunE:  groupRun,
	}
	var output string
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the members, the leader, the term and the Raft indices",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outTable, outJSON, outYAML); err != nil {
				return err
			}
			var st *pb.StatusResponse
			err := a.call(func(ctx context.Context, c *client.Client) error {
				var err error
				st, err = c.Status(ctx)
				return err
			})
			if err != nil {
				return err
			}
			if output != outTable {
				return writeObject(a.stdout, output, newStatusJSON(st))
			}
			return writeStatus(a, st)
		},
	}
	status.Flags().StringVarP(&output, "output", "o", outTable, "output format: table|json|yaml")
	cmd.AddCommand(status, a.healthCmd(), a.transferCmd())
	return cmd
}

func writeStatus(a *app, st *pb.StatusResponse) error {
	tw := newTable(a.stdout)
	leader := orNone(st.GetLeader())
	if st.GetLeaderGrpcAddr() != "" {
		leader += " (" + st.GetLeaderGrpcAddr() + ")"
	}
	fmt.Fprintf(tw, "Leader:\t%s\n", leader)
	fmt.Fprintf(tw, "Term:\t%d\n", st.GetTerm())
	fmt.Fprintf(tw, "Commit Index:\t%d\n", st.GetCommitIndex())
	fmt.Fprintf(tw, "Applied Index:\t%d\n", st.GetAppliedIndex())
	fmt.Fprintf(tw, "Answered By:\t%s (%s)\n", orNone(st.GetId()), orNone(st.GetState()))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout)
	return writeMembers(a, st.GetMembers())
}
