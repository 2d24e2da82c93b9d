// Package buildinfo names the leasekeeper binary that runs: its release
// version, VCS commit and Go toolchain.
//
// `make build` and `make release` set the version and commit with
//
//	-ldflags "-X github.com/leasekeeper/leasekeeper/internal/buildinfo.version=$(git describe --tags --always --dirty)
//	          -X github.com/leasekeeper/leasekeeper/internal/buildinfo.commit=..."
//
// A plain `go build` or `go install` leaves them empty; the Go toolchain's
// own record (runtime/debug.ReadBuildInfo: the module version and the
// vcs.revision and vcs.modified settings) fills them in then.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by the linker (-X); see the package comment.
var (
	version string
	commit  string
)

// Devel is the version of a build that names no release.
const Devel = "devel"

// Info names one binary.
type Info struct {
	// Version is the release tag (e.g. v0.3.0, or v0.3.0-4-gabc1234 for a
	// build after it), or Devel.
	Version string
	// Commit is the VCS revision, with "-dirty" when the tree had
	// uncommitted changes; empty when unknown.
	Commit string
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// Get returns this binary's build info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(version, commit, bi)
}

// resolve prefers the linker's values and falls back to the toolchain's
// record, bi (nil when the binary has none).
func resolve(version, commit string, bi *debug.BuildInfo) Info {
	info := Info{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if bi == nil {
		if info.Version == "" {
			info.Version = Devel
		}
		return info
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	if info.Version == "" {
		// go install module@vX.Y.Z records the module's version; a build
		// in a checkout records "(devel)", or a pseudo-version that says
		// no more than the commit does.
		info.Version = Devel
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			info.Version = v
		}
	}
	if info.Commit == "" {
		var rev string
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" && dirty {
			rev += "-dirty"
		}
		info.Commit = rev
	}
	return info
}

// String is the one line that --version prints.
func (i Info) String() string {
	commit := i.Commit
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("%s (commit %s, %s)", i.Version, commit, i.GoVersion)
}
