package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/leasekeeper/leasekeeper/client"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
	exitHeld  = 3
)

// exitCodeError ends leasectl with code; a nil err prints nothing.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit code %d", e.code)
	}
	return e.err.Error()
}

func (e *exitCodeError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &exitCodeError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// app holds the global flags and the streams of one leasectl run.
type app struct {
	ctx       context.Context
	stdout    io.Writer
	stderr    io.Writer
	endpoints string
	timeout   time.Duration
	namespace string
	// now is used only to print ages.
	now func() time.Time
	// TLS and credentials.
	cacert, cert, key, token, tokenFile, serverName string
}

// runContext runs leasectl with args until it ends or ctx is done, and
// returns the exit code.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{ctx: ctx, stdout: stdout, stderr: stderr, now: time.Now}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	a.addCompletions(root) // after SetOut: cobra's completion command keeps the writer it sees
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitError
	var ee *exitCodeError
	if errors.As(err, &ee) {
		code = ee.code
		if ee.err == nil {
			return code
		}
	}
	fmt.Fprintln(stderr, errorLine(err))
	return code
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "leasectl",
		Short: "Read, take and watch leases of a leasekeeper cluster",
		Long: `leasectl talks to a leasekeeper cluster through any of its nodes.

Exit codes: 0 success, 1 error, 2 usage error, 3 lease held by another holder
(acquire, lock --no-wait); lock and elect exit with their command's status.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          groupArgs,
		RunE:          groupRun,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitCodeError{code: exitUsage, err: err}
	})
	endpoints := strings.Join(client.DefaultEndpoints, ",")
	if env := os.Getenv("LEASECTL_ENDPOINTS"); env != "" {
		endpoints = env
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.endpoints, "endpoints", endpoints, "comma-separated host:port gRPC addresses of cluster nodes (env LEASECTL_ENDPOINTS)")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "time limit of a request; within it, a node that refuses or does not answer in time is left for the next endpoint (watch has none)")
	pf.StringVarP(&a.namespace, "namespace", "n", "default", "namespace of the lease")
	pf.StringVar(&a.cacert, "cacert", os.Getenv("LEASECTL_CACERT"), "CA bundle that verifies the nodes (enables TLS; env LEASECTL_CACERT)")
	pf.StringVar(&a.cert, "cert", os.Getenv("LEASECTL_CERT"), "client certificate for mutual TLS (env LEASECTL_CERT)")
	pf.StringVar(&a.key, "key", os.Getenv("LEASECTL_KEY"), "key of --cert (env LEASECTL_KEY)")
	pf.StringVar(&a.token, "token", "", "bearer token (prefer --token-file)")
	pf.StringVar(&a.tokenFile, "token-file", os.Getenv("LEASECTL_TOKEN_FILE"), "file holding a bearer token (env LEASECTL_TOKEN_FILE)")
	pf.StringVar(&a.serverName, "tls-server-name", "", "name to expect in the nodes' certificates (default: the endpoint's host)")

	get := a.getCmd()
	get.AddCommand(a.getNodesCmd())
	root.AddCommand(
		a.acquireCmd(), a.renewCmd(), a.releaseCmd(),
		get, a.describeCmd(), a.deleteCmd(),
		a.watchCmd(), a.clusterCmd(),
		a.lockCmd(), a.electCmd(), a.observeCmd(),
		a.memberCmd(), a.snapshotCmd(),
		a.certsCmd(), a.hashTokenCmd(),
		a.versionCmd(),
	)
	return root
}

// groupArgs and groupRun serve commands that only group subcommands: an
// unknown subcommand is a usage error, none prints the help.
func groupArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

func groupRun(cmd *cobra.Command, _ []string) error { return cmd.Help() }

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes %s, got %d arguments", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

func checkOutput(output string, allowed ...string) error {
	for _, o := range allowed {
		if output == o {
			return nil
		}
	}
	return usageErrorf("--output must be one of %s, got %q", strings.Join(allowed, "|"), output)
}

// client builds a client from the global flags; the caller closes it.
func (a *app) client() (*client.Client, error) {
	cfg := client.DefaultConfig()
	cfg.Endpoints = nil
	for _, ep := range strings.Split(a.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			cfg.Endpoints = append(cfg.Endpoints, ep)
		}
	}
	if a.timeout <= 0 {
		return nil, usageErrorf("--timeout must be positive, got %v", a.timeout)
	}
	if err := a.secure(&cfg); err != nil {
		return nil, err
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, usageErrorf("--endpoints: %v", err)
	}
	return c, nil
}

// callLease is call for a request about the lease name in --namespace:
// its errors name the lease.
func (a *app) callLease(name string, f func(ctx context.Context, c *client.Client) error) error {
	return onObject(a.call(f), "lease", a.namespace+"/"+name)
}

// call runs f with a client and a context bounded by --timeout.
func (a *app) call(f func(ctx context.Context, c *client.Client) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(a.ctx, a.timeout)
	defer cancel()
	return f(ctx, c)
}
