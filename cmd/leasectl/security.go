package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/leasekeeper/leasekeeper/auth"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/tlsutil"
)

// secure adds TLS and credentials from the flags to cfg.
func (a *app) secure(cfg *client.Config) error {
	if (a.cert == "") != (a.key == "") {
		return usageErrorf("--cert and --key go together")
	}
	if a.cacert != "" || a.cert != "" {
		t, _, err := tlsutil.ClientConfig(a.cert, a.key, a.cacert, a.serverName)
		if err != nil {
			return err
		}
		cfg.TLS = t
	}
	tok := a.token
	if a.tokenFile != "" {
		b, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok != "" {
		if cfg.TLS == nil {
			return usageErrorf("a bearer token needs TLS: give --cacert")
		}
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithPerRPCCredentials(auth.BearerToken{Token: tok}))
	}
	return nil
}

// certsCmd makes a development PKI: a CA, one certificate per node (server
// and client use, in the node group, valid for its addresses) and client
// certificates for people and programs.
func (a *app) certsCmd() *cobra.Command {
	var dir string
	var nodes, clients, hosts []string
	var validity time.Duration
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a development CA and node and client certificates",
		Long: `certs writes ca.crt/ca.key, <node>.crt/.key for every --node (usable as server
and client, in the leasekeeper:nodes group, valid for localhost, 127.0.0.1 and
every --host) and <client>.crt/.key for every --client (identity = the name).
For development and tests: keep a production CA's key offline.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := os.Stat(filepath.Join(dir, "ca.key")); err != nil {
				if _, _, err := tlsutil.GenerateCA(dir, "leasekeeper development CA", validity); err != nil {
					return err
				}
			}
			dns := []string{"localhost"}
			ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
			for _, h := range hosts {
				if ip := net.ParseIP(h); ip != nil {
					ips = append(ips, ip)
				} else {
					dns = append(dns, h)
				}
			}
			for _, n := range nodes {
				if _, _, err := tlsutil.GenerateCert(dir, dir, n, append([]string{n}, dns...), ips, true, true,
					tlsutil.WithGroups(tlsutil.NodeGroup), tlsutil.WithValidity(validity)); err != nil {
					return err
				}
			}
			for _, c := range clients {
				if _, _, err := tlsutil.GenerateCert(dir, dir, c, nil, nil, true, false, tlsutil.WithValidity(validity)); err != nil {
					return err
				}
			}
			fmt.Fprintf(a.stdout, "wrote a CA, %d node and %d client certificates to %s\n", len(nodes), len(clients), dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "certs", "output directory")
	cmd.Flags().StringSliceVar(&nodes, "node", []string{"n1", "n2", "n3"}, "node names")
	cmd.Flags().StringSliceVar(&clients, "client", []string{"admin"}, "client names (identities)")
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "extra host names or IPs the node certificates are valid for")
	cmd.Flags().DurationVar(&validity, "validity", 365*24*time.Hour, "how long the certificates are valid")
	return cmd
}

func (a *app) hashTokenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hash-token [TOKEN]",
		Short: "Print the sha256 of a bearer token, for the server's token file",
		Long: `hash-token prints the sha256 of a bearer token, for the server's token file.
It reads the token from standard input (first line) when no argument is given,
or when the argument is "-": a token on the command line is visible to other
users of the machine (ps) and stays in the shell's history.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return fmt.Errorf("hash-token takes at most one argument, the token (or none to read it from standard input)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			tok := ""
			if len(args) == 1 && args[0] != "-" {
				tok = args[0]
			} else {
				line, err := bufio.NewReader(io.LimitReader(cmd.InOrStdin(), 1<<16)).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("hash-token: reading the token: %w", err)
				}
				tok = strings.TrimSpace(line)
			}
			if tok == "" {
				return errors.New("hash-token: empty token")
			}
			fmt.Fprintln(a.stdout, auth.HashToken(tok))
			return nil
		},
	}
}
