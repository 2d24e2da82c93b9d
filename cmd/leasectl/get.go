package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

func (a *app) getCmd() *cobra.Command {
	var (
		allNamespaces bool
		selector      string
		output        string
		serializable  bool
	)
	cmd := &cobra.Command{
		Use:   "get lease|leases [NAME] [-n NS | -A] [-l selector]",
		Short: "Show one lease or a list of leases",
		Long: `Show one lease or a list of leases, like kubectl get leases.

The wide output adds the fencing token, the transitions, the duration and the
time left to each live holding (EXPIRES IN), as the leader counts it; a
--serializable read answered by a follower does not know it and shows "-".`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageErrorf("%s takes lease|leases [NAME], got %d arguments", cmd.CommandPath(), len(args))
			}
			return checkResource(args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outTable, outWide, outJSON, outYAML); err != nil {
				return err
			}
			if len(args) == 2 {
				if allNamespaces || selector != "" {
					return usageErrorf("a lease NAME cannot go with --all-namespaces or --selector")
				}
				return a.getOne(args[1], serializable, output)
			}
			return a.getList(&pb.ListRequest{
				Namespace:     a.namespace,
				AllNamespaces: allNamespaces,
				LabelSelector: selector,
				Serializable:  serializable,
				WithRemaining: output == outWide,
			}, output)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&allNamespaces, "all-namespaces", "A", false, "list the leases of every namespace")
	f.StringVarP(&selector, "selector", "l", "", "label selector, e.g. app=db,tier!=cache")
	f.StringVarP(&output, "output", "o", outTable, "output format: table|wide|json|yaml")
	f.BoolVar(&serializable, "serializable", false, "read the answering node's local state: faster, possibly stale")
	return cmd
}

func (a *app) getOne(name string, serializable bool, output string) error {
	var resp *pb.GetResponse
	err := a.callLease(name, func(ctx context.Context, c *client.Client) error {
		var err error
		resp, err = c.Get(ctx, a.namespace, name, serializable)
		return err
	})
	if err != nil {
		return err
	}
	switch output {
	case outJSON, outYAML:
		return writeObject(a.stdout, output, client.NewLeaseJSON(resp.GetLease()))
	default:
		rows := []leaseRow{{lease: resp.GetLease(), remaining: resp.GetRemaining()}}
		return a.writeLeaseTable(a.stdout, rows, output == outWide, false)
	}
}

func (a *app) getList(req *pb.ListRequest, output string) error {
	var resp *pb.ListResponse
	err := a.call(func(ctx context.Context, c *client.Client) error {
		var err error
		resp, err = c.List(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	switch output {
	case outJSON, outYAML:
		return writeObject(a.stdout, output, newLeaseList(resp.GetLeases()))
	}
	if len(resp.GetLeases()) == 0 {
		where := fmt.Sprintf("in %s namespace", req.Namespace)
		if req.AllNamespaces {
			where = "in any namespace"
		}
		_, err := fmt.Fprintf(a.stderr, "No leases found %s.\n", where)
		return err
	}
	rows := make([]leaseRow, 0, len(resp.GetLeases()))
	for _, l := range resp.GetLeases() {
		// A lease the answer gives no time for (free, or the list came
		// from a follower or an older server) shows "-".
		rows = append(rows, leaseRow{lease: l, remaining: resp.GetRemaining()[l.GetNamespace()+"/"+l.GetName()]})
	}
	return a.writeLeaseTable(a.stdout, rows, output == outWide, req.AllNamespaces)
}

func (a *app) describeCmd() *cobra.Command {
	var serializable bool
	cmd := &cobra.Command{
		Use:   "describe lease NAME",
		Short: "Show every field of a lease, with its history",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(2, "lease NAME")(cmd, args); err != nil {
				return err
			}
			return checkResource(args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp *pb.GetResponse
			err := a.callLease(args[1], func(ctx context.Context, c *client.Client) error {
				var err error
				resp, err = c.Get(ctx, a.namespace, args[1], serializable)
				return err
			})
			if err != nil {
				return err
			}
			return describeLease(a.stdout, resp.GetLease(), resp.GetRemaining())
		},
	}
	cmd.Flags().BoolVar(&serializable, "serializable", false, "read the answering node's local state: faster, possibly stale")
	return cmd
}
