package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/leasekeeper/leasekeeper/client"
)

func (a *app) observeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "observe NAME",
		Short: "Print the leader of an election and each change, until interrupted",
		Long: `Print the current leader of the election on the lease NAME ("leader: ID", or
"leader: <none>" when the lease is free or absent), then one line per change,
until interrupted. The watch resumes on another node when the answering one
goes away. --timeout does not apply.`,
		Args: exactArgs(1, "one lease NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			e, err := client.NewElection(c, args[0], client.WithNamespace(a.namespace))
			if err != nil {
				return err
			}
			for leader := range e.Observe(a.ctx) {
				if _, err := fmt.Fprintf(a.stdout, "leader: %s\n", orNone(leader)); err != nil {
					return err
				}
			}
			return nil
		},
	}
}
