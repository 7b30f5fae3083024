package main

import (
	"debug/elf"
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

// The binary links only the AWS operations it calls. It also links
// text/template (through exporter-toolkit), and then the linker keeps
// every exported method of whatever an interface value can reach: an SDK
// client stored in an interface or a struct field would bring all of its
// service's operations along (EC2 alone is 19 MB of the 73 MB binary
// this test was written against) and every connwatch process, tunnel
// included, would map the pages. So the clients are held as method values
// (connect.SDK, cloudwatch.SDK); this test builds the real binary and
// reads its symbol table.
func TestBinaryLinksOnlyCalledAWSOperations(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin := testproc.RequireBinary(t, "deps", filepath.Join(runtime.GOROOT(), "bin", "go"))
	bin := filepath.Join(t.TempDir(), "connwatch")
	if out, err := exec.Command(goBin, "build", "-o", bin, module+"/cmd/connwatch").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	linked := map[string]bool{}
	for _, s := range syms {
		linked[s.Name] = true
	}
	// The man page generator is for the release script's own build.
	for name := range linked {
		if strings.HasPrefix(name, "github.com/spf13/cobra/doc.") || strings.HasPrefix(name, "github.com/russross/blackfriday") {
			t.Errorf("the binary links %s: the man page generator belongs in -tags manpages builds only", name)
			break
		}
	}
	const sdk = "github.com/aws/aws-sdk-go-v2/service/"
	// Called, so linked: the check can see an operation.
	for _, op := range []string{"ec2.(*Client).StopInstances", "ec2.(*Client).DescribeInstances", "cloudwatch.(*Client).PutMetricData", "sns.(*Client).Publish"} {
		if !linked[sdk+op] {
			t.Errorf("%s is not in the binary's symbols; the check below cannot be trusted", op)
		}
	}
	for _, op := range []string{"ec2.(*Client).RunInstances", "ec2.(*Client).CreateVpc", "cloudwatch.(*Client).DeleteDashboards", "sns.(*Client).CreateTopic"} {
		if linked[sdk+op] {
			t.Errorf("the binary links %s, which connwatch never calls: some *Client is reachable from an interface again", op)
		}
	}
}
