package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// Shell completion: cobra's own `leasectl completion bash|zsh|fish|powershell`
// writes the script; these functions supply the words it offers.

// completionTimeout bounds the List behind a completion: a shell waits for
// it at every Tab.
const completionTimeout = 2 * time.Second

// leaseNames lists the names in --namespace that start with prefix; no
// answer in time offers nothing.
func (a *app) leaseNames(prefix string) []string {
	var names []string
	c, err := a.client()
	if err != nil {
		return nil
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(a.ctx, min(a.timeout, completionTimeout))
	defer cancel()
	resp, err := c.List(ctx, &pb.ListRequest{Namespace: a.namespace, Serializable: true})
	if err != nil {
		return nil
	}
	for _, l := range resp.GetLeases() {
		if strings.HasPrefix(l.GetName(), prefix) {
			names = append(names, l.GetName())
		}
	}
	return names
}

// completeNameAt offers lease names for the argument at position pos
// (0-based) and nothing after it.
func (a *app) completeNameAt(pos int) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) != pos {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return a.leaseNames(toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeResourceName serves `get|describe|delete lease NAME`: the
// resource first, then a name.
func (a *app) completeResourceName(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	switch len(args) {
	case 0:
		var out []string
		for _, r := range []string{"lease", "leases"} {
			if strings.HasPrefix(r, toComplete) {
				out = append(out, r)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	case 1:
		return a.leaseNames(toComplete), cobra.ShellCompDirectiveNoFileComp
	}
	return nil, cobra.ShellCompDirectiveNoFileComp
}

// completeOutput offers the values of an --output flag.
func completeOutput(values ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// addCompletions adds cobra's completion command, with an unknown shell
// a usage error like any unknown subcommand, and attaches the completion
// functions to root's commands.
func (a *app) addCompletions(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	for _, cmd := range root.Commands() {
		switch cmd.Name() {
		case "completion":
			cmd.Args, cmd.RunE = groupArgs, groupRun
		case "get", "describe", "delete":
			cmd.ValidArgsFunction = a.completeResourceName
		case "acquire", "renew", "release", "watch", "lock":
			cmd.ValidArgsFunction = a.completeNameAt(0)
		}
		// The usage of every --output says "output format: a|b|c".
		if f := cmd.Flags().Lookup("output"); f != nil {
			if _, list, ok := strings.Cut(f.Usage, "output format: "); ok {
				_ = cmd.RegisterFlagCompletionFunc("output", completeOutput(strings.Split(list, "|")...))
			}
		}
	}
}
