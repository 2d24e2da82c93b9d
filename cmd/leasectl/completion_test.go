package main

import (
	"strings"
	"testing"

	"github.com/leasekeeper/leasekeeper/client/clienttest"
)

// TestCompletionScripts: leasectl completion writes a script for each
// shell that the README documents.
func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "# bash completion V2 for leasectl",
		"zsh":  "#compdef leasectl",
		"fish": "# fish completion for leasectl",
	} {
		out := mustRun(t, nil, exitOK, "completion", shell)
		if !strings.HasPrefix(out, want) || !strings.Contains(out, "__complete") {
			t.Errorf("completion %s: starts %q, want %q and a call to __complete", shell, out[:min(len(out), 60)], want)
		}
	}
	if _, errOut, code := leasectl(t, nil, "completion", "tcsh"); code != exitUsage {
		t.Errorf("completion tcsh: exit %d (%s), want %d", code, errOut, exitUsage)
	}
}

// TestCompletionWords: what the shell offers at a Tab, through the
// hidden __complete command the scripts call.
func TestCompletionWords(t *testing.T) {
	srv := clienttest.Start(t)
	seed(srv)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"resource (or get's subcommand)", []string{"get", ""}, []string{"nodes", "lease", "leases"}},
		{"resource of describe", []string{"describe", ""}, []string{"lease", "leases"}},
		{"resource prefix", []string{"describe", "leases"}, []string{"leases"}},
		{"lease name", []string{"get", "lease", ""}, []string{"cache", "db"}},
		{"lease name prefix", []string{"acquire", "d"}, []string{"db"}},
		{"lease name in a namespace", []string{"-n", "jobs", "release", ""}, []string{"cron"}},
		{"nothing after the name", []string{"renew", "db", ""}, nil},
		{"output values", []string{"get", "leases", "-o", ""}, []string{"table", "wide", "json", "yaml"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := mustRun(t, srv, exitOK, append([]string{"__complete"}, tc.args...)...)
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if line != "" && !strings.HasPrefix(line, ":") {
					got = append(got, strings.SplitN(line, "\t", 2)[0])
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("offered %q, want %q", got, tc.want)
			}
		})
	}
}
