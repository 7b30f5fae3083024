package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

const module = "github.com/connwatch/connwatch"

// harnessDeps lists the test harnesses (packages under internal/testkit)
// and the standard testing packages that pkg's build imports.
func harnessDeps(t *testing.T, pkg string) []string {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	goBin = testproc.RequireBinary(t, "deps", goBin)
	out, err := exec.Command(goBin, "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	var bad []string
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, module+"/internal/testkit/") || dep == "testing" || strings.HasPrefix(dep, "testing/") {
			bad = append(bad, dep)
		}
	}
	return bad
}

// The binary links no test harness: they start sshd, fake AWS, fork
// hostile users, and belong to tests alone.
func TestBinaryImportsNoHarness(t *testing.T) {
	if bad := harnessDeps(t, module+"/cmd/connwatch"); len(bad) > 0 {
		t.Fatalf("cmd/connwatch imports test harnesses: %s", strings.Join(bad, ", "))
	}
	// The check itself finds a harness where one is imported.
	if bad := harnessDeps(t, module+"/internal/testkit/sshdtest"); !slices.Contains(bad, module+"/internal/testkit/testproc") {
		t.Fatalf("harnessDeps(sshdtest) = %v, want it to name testproc", bad)
	}
}
