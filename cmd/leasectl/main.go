// Command leasectl is the command line client of leasekeeper: it reads,
// takes, renews, releases, deletes and watches leases and reports the
// cluster's state.
//
// Exit codes: 0 on success, 1 on an error, 2 on a usage error, 3 when acquire
// finds the lease held by someone else.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs leasectl with args until it ends or the process receives SIGINT or
// SIGTERM, and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, args, stdout, stderr)
}
