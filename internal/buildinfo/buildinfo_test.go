package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	vcs := func(rev, modified string) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}}
	}
	tests := []struct {
		name            string
		version, commit string
		bi              *debug.BuildInfo
		want            Info
	}{
		{"linker values win", "v1.2.0", "abc", vcs("def", "true"), Info{"v1.2.0", "abc", "go1.99.1"}},
		{"vcs fallback", "", "", vcs("def", "false"), Info{Devel, "def", "go1.99.1"}},
		{"vcs fallback of a dirty tree", "", "", vcs("def", "true"), Info{Devel, "def-dirty", "go1.99.1"}},
		{"version from the linker, commit from vcs", "v1.2.0-3-gdef", "", vcs("def", "false"), Info{"v1.2.0-3-gdef", "def", "go1.99.1"}},
		{"go install of a tagged module", "", "", &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "v1.3.0"}}, Info{"v1.3.0", "", "go1.99.1"}},
		{"no build info", "", "", nil, Info{Devel, "", runtime.Version()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolve(tc.version, tc.commit, tc.bi); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		in   Info
		want string
	}{
		{Info{"v1.2.0", "abc", "go1.99.1"}, "v1.2.0 (commit abc, go1.99.1)"},
		{Info{Devel, "", "go1.99.1"}, "devel (commit unknown, go1.99.1)"},
	}
	for _, tc := range tests {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.in, got, tc.want)
		}
	}
}
