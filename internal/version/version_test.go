package version

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/connwatch/connwatch", Version: "v0.3.1"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	tests := []struct {
		name           string
		bi             *debug.BuildInfo
		ver, rev, date string
		want           Info
	}{
		{
			name: "ldflags win over build info",
			bi:   bi, ver: "1.2.0", rev: "feedface", date: "2026-12-05T17:00:00Z",
			want: Info{Version: "1.2.0", Revision: "feedface", Date: "2026-12-05T17:00:00Z", GoVersion: "go1.26.8"},
		},
		{
			name: "build info alone, modified tree",
			bi:   bi,
			want: Info{Version: "0.3.1", Revision: "0123456789abcdef0123456789abcdef01234567+dirty", Date: "2026-12-01T10:00:00Z", GoVersion: "go1.26.8"},
		},
		{
			name: "nothing recorded",
			want: Info{Version: "(devel)", Revision: "unknown", Date: "unknown"},
		},
		{
			name: "release tag with a v",
			ver:  "v2.0.0",
			want: Info{Version: "2.0.0", Revision: "unknown", Date: "unknown"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fromBuildInfo(tt.bi, tt.ver, tt.rev, tt.date)
			if tt.want.GoVersion == "" {
				tt.want.GoVersion = got.GoVersion // the running toolchain's
			}
			tt.want.Platform = got.Platform
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("fromBuildInfo (-want +got):\n%s", d)
			}
		})
	}
}

func TestString(t *testing.T) {
	s := Info{Version: "1.2.0", Revision: "0123456789abcdef0123", Date: "2026-12-05T17:00:00Z", GoVersion: "go1.26.8", Platform: "linux/arm64"}.String()
	want := "connwatch 1.2.0 (commit 0123456789ab, built 2026-12-05T17:00:00Z, go1.26.8 linux/arm64)"
	if s != want {
		t.Errorf("String() = %q, want %q", s, want)
	}
	if s := (Info{Revision: "0123456789abcdef+dirty"}).String(); !strings.Contains(s, "0123456789abcdef+dirty") {
		t.Errorf("a dirty revision is shortened: %q", s)
	}
}
