package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/leasekeeper/leasekeeper/client"
)

// nodeJSON is one node of get nodes -o json|yaml.
type nodeJSON struct {
	Name                 string           `json:"name"`
	Status               string           `json:"status"`
	Holder               string           `json:"holder,omitempty"`
	LastHeartbeatSeconds *float64         `json:"lastHeartbeatSecondsAgo,omitempty"`
	Lease                client.LeaseJSON `json:"lease"`
}

type nodeList struct {
	Items []nodeJSON `json:"items"`
}

// getNodesCmd is "get nodes", a subcommand of get.
func (a *app) getNodesCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "nodes [-n NS]",
		Aliases: []string{"node"},
		Short:   "Show the heartbeats of a namespace's nodes",
		Long: `Show every node that heartbeats in a namespace (default ` + client.DefaultHeartbeatNamespace + ` unless -n is
given): Ready when its last heartbeat is within the lease duration, NotReady
past it but within the grace period, Unknown when the lease is free or expired.

LAST HEARTBEAT is how long ago the leader applied the last renewal, from the
leader's own remaining time; AGE is the lease's age.`,
		Args: exactArgs(0, "no arguments after nodes"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outTable, outJSON, outYAML); err != nil {
				return err
			}
			ns := a.namespace
			if f := cmd.Flag("namespace"); f == nil || !f.Changed {
				ns = client.DefaultHeartbeatNamespace
			}
			var members []client.Member
			var now time.Time
			err := a.call(func(ctx context.Context, c *client.Client) error {
				var err error
				members, err = client.ListMembers(ctx, c, ns)
				now = c.Clock().Now()
				return err
			})
			if err != nil {
				return err
			}
			if output != outTable {
				l := nodeList{Items: []nodeJSON{}}
				for _, m := range members {
					j := nodeJSON{Name: m.Name, Status: m.State.String(), Holder: m.Holder, Lease: client.NewLeaseJSON(m.Lease)}
					if !m.LastHeartbeat.IsZero() {
						s := now.Sub(m.LastHeartbeat).Seconds()
						j.LastHeartbeatSeconds = &s
					}
					l.Items = append(l.Items, j)
				}
				return writeObject(a.stdout, output, l)
			}
			if len(members) == 0 {
				_, err := fmt.Fprintf(a.stderr, "No nodes found in %s namespace.\n", ns)
				return err
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "NAME\tSTATUS\tLAST HEARTBEAT\tAGE")
			for _, m := range members {
				last := "-"
				if !m.LastHeartbeat.IsZero() {
					last = humanDuration(now.Sub(m.LastHeartbeat)) + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.State, last, a.age(m.Lease.GetCreateTime()))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", outTable, "output format: table|json|yaml")
	return cmd
}
