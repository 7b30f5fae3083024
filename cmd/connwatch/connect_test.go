package main

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

// Usage errors exit 2 before any AWS call and never write to standard
// output, which is ssh's byte stream.
func TestConnectUsage(t *testing.T) {
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1") // nothing may reach it
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"connect"}, "connect takes INSTANCE and an optional PORT, got 0 arguments"},
		{[]string{"connect", "i-0123456789abcdef0", "22", "x"}, "got 3 arguments"},
		{[]string{"connect", "devbox"}, `instance "devbox": want an instance id (i- and 8 or 17 hex digits) or name:TAG`},
		{[]string{"connect", "i-0123456789abcdef"}, `instance "i-0123456789abcdef"`},
		{[]string{"connect", "name:"}, `empty Name tag`},
		{[]string{"connect", "i-0123456789abcdef0", "ssh"}, `port "ssh": want 1 to 65535`},
		{[]string{"connect", "i-0123456789abcdef0", "70000"}, `port "70000"`},
		{[]string{"connect", "--address", "elastic", "i-0123456789abcdef0"}, `--address "elastic": want public, private or ipv6`},
		{[]string{"connect", "--address", "", "i-0123456789abcdef0"}, `--address "": want public, private or ipv6`},
		{[]string{"connect", "--timeout", "0", "i-0123456789abcdef0"}, "--timeout 0s: must be positive"},
		{[]string{"connect", "--hold", "-1m", "i-0123456789abcdef0"}, "--hold -1m0s: must not be negative"},
		{[]string{"connect", "--region", "eu west 1", "i-0123456789abcdef0"}, `--region "eu west 1": not a region name`},
		{[]string{"connect", "--timeout", "soon", "i-0123456789abcdef0"}, `invalid argument "soon"`},
		{[]string{"connect", "--print-ssh-config", "devbox"}, "connect --print-ssh-config takes HOST and INSTANCE, got 1 arguments"},
		{[]string{"connect", "--print-ssh-config", "devbox", "devbox"}, `instance "devbox"`},
		{[]string{"connect", "--print-ssh-config", "dev box", "i-0123456789abcdef0"}, `host "dev box": want a plain name`},
		{[]string{"connect", "--print-ssh-config", "dev", "name:Dev Box"}, "cannot go into ssh_config; give the instance id"},
		{[]string{"connect", "--print-ssh-config", "--profile", "my profile", "dev", "i-0123456789abcdef0"}, `flag "my profile"`},
	} {
		code, stdout, stderr := runCLI(t, tc.args)
		if code != exitUsage || stdout != "" || !strings.HasPrefix(stderr, "connwatch: ") || !strings.Contains(stderr, tc.want) ||
			!strings.Contains(stderr, "Run 'connwatch connect --help' for usage.") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, code, stdout, stderr, exitUsage, tc.want)
		}
	}
}

func TestConnectPrintSSHConfig(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, []string{"connect", "--region", "eu-west-1", "--hold", "10m", "--print-ssh-config", "devbox", "i-0123456789abcdef0"})
	want := "Host devbox\n" +
		"    HostName i-0123456789abcdef0\n" +
		"    HostKeyAlias devbox\n" +
		"    ProxyCommand " + exe + " connect --region eu-west-1 --hold 10m0s %h %p\n"
	if code != exitOK || stdout != want || stderr != "" {
		t.Errorf("exit %d, stderr %q, stdout\n%s\nwant\n%s", code, stderr, stdout, want)
	}
	code, stdout, _ = runCLI(t, []string{"connect", "--print-ssh-config", "build", "name:build-box"})
	if want := "    ProxyCommand " + exe + " connect %h %p\n"; code != exitOK || !strings.Contains(stdout, "    HostName name:build-box\n") || !strings.HasSuffix(stdout, want) {
		t.Errorf("name: exit %d, stdout\n%s", code, stdout)
	}
}

func TestConnectHelp(t *testing.T) {
	code, stdout, _ := runCLI(t, []string{"connect", "--help"})
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"connect [flags] INSTANCE [PORT]", "ProxyCommand connwatch connect --region eu-west-1 %h %p", "HostKeyAlias devbox",
		"name:TAG", "known_hosts", "ec2:DescribeInstances", "ec2:StartInstances", "ec2:CreateTags", "connwatch:hold-until",
		"--boot-grace", "start_hold_max", "VS Code", "remote.SSH.connectTimeout", "half-closed", "$XDG_RUNTIME_DIR/connwatch", "sshd answering after",
		"--print-ssh-config", "--address", "--timeout duration", "(default 5m0s)", "--hold", "--profile", "Exit status",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("connect --help lacks %q", want)
		}
	}
	_, stdout, _ = runCLI(t, []string{"--help"})
	if !strings.Contains(stdout, "\n  connect ") {
		t.Errorf("root help does not list connect:\n%s", stdout)
	}
	_, stdout, _ = runAWS(t, "setup-alarm", "--help")
	if !strings.Contains(stdout, "ec2:DescribeInstances and ec2:StartInstances") || !strings.Contains(stdout, "ec2:CreateTags") {
		t.Errorf("aws setup-alarm --help does not name connect's IAM policy")
	}
}

// connect goes through the SDK's standard settings (credentials, region,
// AWS_ENDPOINT_URL) and shows AWS's refusal with the IAM action to
// allow, exiting 1 with nothing on standard output.
func TestConnectAWSRefuses(t *testing.T) {
	s := awstest.New(t, awstest.WithRegion("eu-west-1"))
	s.Env(t)
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	s.Handle("ec2", "DescribeInstances", func(r *awstest.Request) awstest.Response {
		return awstest.ErrorResponse(r, http.StatusForbidden, "UnauthorizedOperation", "You are not authorized to perform this operation.")
	})
	code, stdout, stderr := runCLI(t, []string{"connect", "i-0123456789abcdef0", "22"})
	if code != exitFailure || stdout != "" || !strings.Contains(stderr, "no AWS region: give --region") {
		t.Errorf("without a region: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, []string{"connect", "--region", "eu-west-1", "i-0123456789abcdef0", "22"})
	want := "connwatch: describe instance i-0123456789abcdef0: UnauthorizedOperation: You are not authorized to perform this operation. (the IAM policy must allow ec2:DescribeInstances)\n"
	if code != exitFailure || stdout != "" || stderr != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, stdout, stderr, exitFailure, want)
	}
	calls := s.Calls("ec2", "DescribeInstances")
	if len(calls) != 1 || calls[0].Params.Get("InstanceId.1") != "i-0123456789abcdef0" {
		t.Errorf("DescribeInstances calls: %+v", calls)
	}
}
