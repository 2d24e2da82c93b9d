package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/fsm"
)

// healthCmd is `cluster health`: every endpoint's gRPC health and its view
// of the cluster. It exits 1 when any endpoint is not serving.
func (a *app) healthCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Check every endpoint: serving or not, its Raft state and term",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var eps []string
			for _, ep := range strings.Split(a.endpoints, ",") {
				if ep = strings.TrimSpace(ep); ep != "" {
					eps = append(eps, ep)
				}
			}
			dial, err := a.probeDialOptions()
			if err != nil {
				return err
			}
			// Every endpoint at once: a node that stopped answering costs
			// one --timeout, not one per node.
			type answer struct {
				health string
				st     *pb.StatusResponse
			}
			answers := make([]answer, len(eps))
			var wg sync.WaitGroup
			for i, ep := range eps {
				wg.Go(func() {
					h, st := a.probe(ep, dial)
					answers[i] = answer{h, st}
				})
			}
			wg.Wait()
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "ENDPOINT\tHEALTH\tID\tSTATE\tTERM\tAPPLIED\tLEADER")
			unhealthy := 0
			for i, ep := range eps {
				h, st := answers[i].health, answers[i].st
				if h != "SERVING" {
					unhealthy++
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ep, h, orDash(st.GetId()), orDash(st.GetState()),
					num(st.GetTerm()), num(st.GetAppliedIndex()), orDash(st.GetLeader()))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if unhealthy > 0 {
				return fmt.Errorf("%d endpoint(s) not serving", unhealthy)
			}
			return nil
		},
	}
}

func num(v uint64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprint(v)
}

// probeDialOptions are the dial options of a probe: the TLS and
// credentials the flags give, as every other command uses.
func (a *app) probeDialOptions() ([]grpc.DialOption, error) {
	var cfg client.Config
	if err := a.secure(&cfg); err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	return append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, cfg.DialOptions...), nil
}

// probe asks one endpoint, and only it, for its health and status.
func (a *app) probe(ep string, dial []grpc.DialOption) (string, *pb.StatusResponse) {
	conn, err := grpc.NewClient(ep, dial...)
	if err != nil {
		return "UNREACHABLE", nil
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(a.ctx, a.timeout)
	defer cancel()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
	if err != nil {
		return "UNREACHABLE", nil
	}
	st, _ := pb.NewClusterClient(conn).Status(ctx, &pb.StatusRequest{})
	return hr.GetStatus().String(), st
}

func (a *app) transferCmd() *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "transfer-leader",
		Short: "Hand leadership to another member (--to ID, or the most up-to-date one)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(func(ctx context.Context, c *client.Client) error {
				r, err := c.Cluster().TransferLeadership(ctx, &pb.TransferLeadershipRequest{To: to})
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "leadership transferred; leader now %s\n", orNone(r.GetLeader()))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "ID of the member that should lead")
	return cmd
}

func (a *app) memberCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "member",
		Short: "List, add, remove and promote cluster members",
		Args:  groupArgs,
		RunE:  groupRun,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the members",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(func(ctx context.Context, c *client.Client) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				return writeMembers(a, st.GetMembers())
			})
		},
	}
	var raftAddr, grpcAddr string
	var nonvoter bool
	add := &cobra.Command{
		Use:   "add ID --raft-addr HOST:PORT [--grpc-addr HOST:PORT] [--nonvoter]",
		Short: "Add a member (start it first with no --bootstrap; lease-node --join does this itself)",
		Args:  exactArgs(1, "the member ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if raftAddr == "" {
				return usageErrorf("member add needs --raft-addr")
			}
			return a.call(func(ctx context.Context, c *client.Client) error {
				r, err := c.Cluster().Join(ctx, &pb.JoinRequest{Id: args[0], RaftAddr: raftAddr, GrpcAddr: grpcAddr, Nonvoter: nonvoter})
				if err != nil {
					return err
				}
				return writeMembers(a, r.GetMembers())
			})
		},
	}
	add.Flags().StringVar(&raftAddr, "raft-addr", "", "the member's Raft address")
	add.Flags().StringVar(&grpcAddr, "grpc-addr", "", "the member's gRPC address")
	add.Flags().BoolVar(&nonvoter, "nonvoter", false, "add it as a non-voting learner (promote it later)")
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a member (a dead one too)",
		Args:  exactArgs(1, "the member ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(func(ctx context.Context, c *client.Client) error {
				r, err := c.Cluster().RemoveMember(ctx, &pb.RemoveMemberRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return writeMembers(a, r.GetMembers())
			})
		},
	}
	promote := &cobra.Command{
		Use:   "promote ID",
		Short: "Make a non-voting member a voter",
		Args:  exactArgs(1, "the member ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(func(ctx context.Context, c *client.Client) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				for _, m := range st.GetMembers() {
					if m.GetId() == args[0] {
						r, err := c.Cluster().Join(ctx, &pb.JoinRequest{Id: m.GetId(), RaftAddr: m.GetRaftAddr(), GrpcAddr: m.GetGrpcAddr()})
						if err != nil {
							return err
						}
						return writeMembers(a, r.GetMembers())
					}
				}
				return fmt.Errorf("no member %q", args[0])
			})
		},
	}
	cmd.AddCommand(list, add, remove, promote)
	return cmd
}

func writeMembers(a *app, ms []*pb.Member) error {
	tw := newTable(a.stdout)
	fmt.Fprintln(tw, "ID\tRAFT ADDR\tGRPC ADDR\tSUFFRAGE\tSTATE\tCMD VERSION")
	for _, m := range ms {
		version := "-" // a server that does not report it
		if v := m.GetCommandVersion(); v != 0 {
			version = strconv.FormatUint(uint64(v), 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.GetId(), orDash(m.GetRaftAddr()), orDash(m.GetGrpcAddr()), orDash(m.GetSuffrage()), orDash(m.GetState()), version)
	}
	return tw.Flush()
}

func (a *app) snapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Back up the lease table",
		Args:  groupArgs,
		RunE:  groupRun,
	}
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent backup from the leader (restore with lease-node --restore FILE)",
		Args:  exactArgs(1, "the file to write"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(func(ctx context.Context, c *client.Client) error {
				return saveSnapshot(ctx, c, args[0], a.stdout)
			})
		},
	}
	cmd.AddCommand(save)
	return cmd
}

// saveSnapshot writes the backup to a temporary file, checks it, and only
// then renames it into place, so a failed save never leaves a bad file
// under the wanted name.
func saveSnapshot(ctx context.Context, c *client.Client, path string, out io.Writer) error {
	stream, err := c.Cluster().Snapshot(ctx, &pb.SnapshotRequest{})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".leasectl-snapshot-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	var size int64
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		n, err := tmp.Write(chunk.GetData())
		size += int64(n)
		if err != nil {
			return err
		}
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	st, err := fsm.ReadSnapshot(tmp)
	if err != nil {
		return fmt.Errorf("the backup received does not check out: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	fmt.Fprintf(out, "saved %s: %d bytes, %d leases, revision %d\n", path, size, st.Leases(), st.Revision())
	return nil
}
