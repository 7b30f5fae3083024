package tunnel

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/connwatch/connwatch/internal/sshconfig"
)

func TestParseJump(t *testing.T) {
	for in, want := range map[string]Jump{
		"bastion":            {Host: "bastion"},
		"me@bastion:2222":    {User: "me", Host: "bastion", Port: 2222},
		"[2001:db8::1]:22":   {Host: "2001:db8::1", Port: 22},
		"2001:db8::1":        {Host: "2001:db8::1"},
		"ssh://a@b.example":  {User: "a", Host: "b.example"},
		" user@10.0.0.1:22 ": {User: "user", Host: "10.0.0.1", Port: 22},
	} {
		got, err := ParseJump(in)
		if err != nil || got != want {
			t.Errorf("ParseJump(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "@h", "h:x", "h:0", "-oProxyCommand=x", "a b"} {
		if _, err := ParseJump(in); !errors.Is(err, ErrSpec) {
			t.Errorf("ParseJump(%q): err = %v, want ErrSpec", in, err)
		}
	}
}

func TestSpecProxyJumpAndCommand(t *testing.T) {
	base := sshconfig.Settings{"hostname": {"h"}}
	s := cloneSettings(base)
	s["proxyjump"] = []string{"me@j1:2222,j2"}
	sp, err := SpecFromSettings("h", s)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]Jump{{User: "me", Host: "j1", Port: 2222}, {Host: "j2"}}, sp.ProxyJump); d != "" {
		t.Errorf("ProxyJump (-want +got):\n%s", d)
	}
	s = cloneSettings(base)
	s["proxyjump"] = []string{"none"}
	if sp, err := SpecFromSettings("h", s); err != nil || sp.ProxyJump != nil {
		t.Errorf("proxyjump none: %v, %v", sp.ProxyJump, err)
	}
	s = cloneSettings(base)
	s["proxycommand"] = []string{"nc %h %p"}
	if _, err := SpecFromSettings("h", s); !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("proxycommand: err = %v, want not supported", err)
	}
}

func cloneSettings(s sshconfig.Settings) sshconfig.Settings {
	out := sshconfig.Settings{}
	for k, v := range s {
		out[k] = append([]string(nil), v...)
	}
	return out
}

func TestResolveChain(t *testing.T) {
	specs := map[string]Spec{
		"j0": {Host: "j0", HostName: "10.0.0.0", Port: 22, User: "a"},
		"j1": {Host: "j1", HostName: "10.0.0.1", Port: 22, User: "b", ProxyJump: []Jump{{Host: "j0"}}},
		"j2": {Host: "j2", HostName: "10.0.0.2", Port: 22, User: "c", ProxyJump: []Jump{{Host: "j0"}},
			Forwards: []Forward{{Kind: Dynamic, BindPort: 1}}},
		"loop": {Host: "loop", ProxyJump: []Jump{{Host: "loop"}}},
	}
	resolve := func(_ context.Context, h string) (Spec, error) {
		sp, ok := specs[h]
		if !ok {
			return Spec{}, errors.New("no such host")
		}
		return sp, nil
	}
	target := Spec{Host: "t", ProxyJump: []Jump{{Host: "j1", User: "u", Port: 2200}, {Host: "j2"}}}
	chain, err := resolveChain(context.Background(), target, resolve, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sp := range chain {
		got = append(got, sp.User+"@"+sp.Addr())
		if sp.Host == "j2" && (sp.ProxyJump != nil || sp.Forwards != nil) {
			t.Errorf("later jump host keeps its ProxyJump or forwards: %+v", sp)
		}
	}
	want := []string{"a@10.0.0.0:22", "u@10.0.0.1:2200", "c@10.0.0.2:22", "@:0"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("chain (-want +got):\n%s", d)
	}
	if _, err := resolveChain(context.Background(), Spec{Host: "t", ProxyJump: []Jump{{Host: "loop"}}}, resolve, 0); !errors.Is(err, ErrSpec) {
		t.Errorf("loop: err = %v, want ErrSpec", err)
	}
	if _, err := resolveChain(context.Background(), target, nil, 0); !errors.Is(err, ErrSpec) {
		t.Errorf("no resolver: err = %v, want ErrSpec", err)
	}
}

// TestProxyJump runs a tunnel to one in-process server through another
// (jump → target, both on loopback), and drops the jump server to see the
// whole chain go and come back.
func TestProxyJump(t *testing.T) {
	var (
		jump  *testServer
		jspec Spec
	)
	f := runFixture(t, time.Second, func(sp *Spec, o *Options) {
		pem, err := os.ReadFile(sp.IdentityFiles[0])
		if err != nil {
			t.Fatal(err)
		}
		signer, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			t.Fatal(err)
		}
		jump = newTestServer(t, signer.PublicKey())
		jspec = Spec{
			Host: "jumphost", HostName: "127.0.0.1", Port: jump.port(), User: "nobody",
			IdentityFiles: sp.IdentityFiles, IdentitiesOnly: true,
			UserKnownHostsFiles:   []string{jump.knownHosts(t, t.TempDir())},
			StrictHostKeyChecking: HostKeyStrict,
			ServerAliveInterval:   time.Second, ServerAliveCountMax: 3,
		}
		sp.ProxyJump = []Jump{{User: "ju", Host: "jumphost"}}
		o.ResolveJump = func(_ context.Context, h string) (Spec, error) {
			if h != "jumphost" {
				return Spec{}, errors.New("unknown host " + h)
			}
			return jspec, nil
		}
	})
	within(t, 5*time.Second, "tunnel up through the jump host", func() bool { return f.tun.Status().State == StateUp })
	if err := roundTrip(f.local, "jumped"); err != nil {
		t.Fatalf("through the jump host: %v", err)
	}
	jump.mu.Lock()
	n := len(jump.conns)
	jump.mu.Unlock()
	if n != 1 {
		t.Errorf("jump server has %d connections, want 1", n)
	}
	jump.stop() // the target stays up: only the first hop goes
	within(t, 5*time.Second, "loss of the jump host noticed", func() bool { return f.tun.Status().State != StateUp })
	jump.restart()
	f.tun.Retry()
	within(t, 5*time.Second, "up again", func() bool {
		st := f.tun.Status()
		return st.State == StateUp && st.Reconnects == 1
	})
	if err := roundTrip(f.local, "again"); err != nil {
		t.Fatal(err)
	}

	// Each hop's host key is checked against its own known_hosts.
	bad := jspec
	bad.UserKnownHostsFiles = []string{f.srv.knownHosts(t, t.TempDir())} // the target's key, not the jump's
	tun := New(f.spec, Options{Logger: f.tun.opt.Logger, AgentSocket: "/nonexistent",
		ResolveJump: func(context.Context, string) (Spec, error) { return bad, nil }})
	if _, _, err := tun.connect(context.Background()); !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), jump.addr) {
		t.Errorf("unknown jump host key: err = %v, want ErrHostKey for %s", err, jump.addr)
	}
}
