// Package version says which build of connwatch is running: the version,
// commit and date the release script stamps in with -ldflags -X, or, for a
// plain "go build" or "go install", what the Go toolchain recorded in the
// binary (module version, VCS revision and time).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by the release build, e.g.
//
//	go build -ldflags "-X github.com/connwatch/connwatch/internal/version.Version=1.2.0 \
//	  -X github.com/connwatch/connwatch/internal/version.Revision=$(git rev-parse HEAD) \
//	  -X github.com/connwatch/connwatch/internal/version.Date=2026-12-05T17:00:00Z"
//
// Empty values are filled from the build information.
var (
	Version  string
	Revision string
	Date     string
)

// Info describes this build.
type Info struct {
	Version   string `json:"version"`   // "1.2.0", or "(devel)" for a build from a work tree
	Revision  string `json:"revision"`  // commit hash; "+dirty" when built from a modified tree; "unknown"
	Date      string `json:"date"`      // commit or build time, RFC 3339; "unknown"
	GoVersion string `json:"goversion"` // the toolchain that built it
	Platform  string `json:"platform"`  // GOOS/GOARCH
}

// Get returns this build's Info: the -X values where set, otherwise what
// debug.ReadBuildInfo recorded.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return fromBuildInfo(bi, Version, Revision, Date)
}

func fromBuildInfo(bi *debug.BuildInfo, ver, rev, date string) Info {
	in := Info{Version: ver, Revision: rev, Date: date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		if in.Version == "" && bi.Main.Version != "" {
			in.Version = bi.Main.Version
		}
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Revision == "" {
					in.Revision = s.Value
				}
			case "vcs.time":
				if in.Date == "" {
					in.Date = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && rev == "" && in.Revision != "" {
			in.Revision += "+dirty"
		}
	}
	in.Version = strings.TrimPrefix(in.Version, "v")
	if in.Version == "" {
		in.Version = "(devel)"
	}
	if in.Revision == "" {
		in.Revision = "unknown"
	}
	if in.Date == "" {
		in.Date = "unknown"
	}
	return in
}

// String is the one-line form --version prints:
// "connwatch 1.2.0 (commit 0123abc, built 2026-12-05T17:00:00Z, go1.26.8 linux/amd64)".
func (in Info) String() string {
	rev := in.Revision
	if len(rev) > 12 && !strings.Contains(rev, "+") {
		rev = rev[:12]
	}
	return fmt.Sprintf("connwatch %s (commit %s, built %s, %s %s)", in.Version, rev, in.Date, in.GoVersion, in.Platform)
}
