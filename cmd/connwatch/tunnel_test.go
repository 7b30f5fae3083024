package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/connwatch/connwatch/internal/atomicfile"
	"github.com/connwatch/connwatch/internal/tunnel"
)

func runTunnelCmd(ctx context.Context, args []string) (string, error) {
	cmd := newTunnelCmd()
	var out bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestTunnelUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"-o", "NoEquals", "h"}, {"--log-format", "xml", "h"}, {"--standby-after", "-1s", "h"}} {
		_, err := runTunnelCmd(context.Background(), args)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: err = %v, want a usage error", args, err)
		}
	}
	out, err := runTunnelCmd(context.Background(), []string{"--help"})
	for _, want := range []string{"ssh -G", "ServerAliveInterval", "SIGUSR1", "accept-new", "--option", "--standby-after", "standby connection"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("--help lacks %q (err %v)", want, err)
		}
	}
}

// TestTunnelListensWhileServerIsDown resolves a Host through the real
// ssh -G (-F and -o both applied), opens its LocalForward at once and
// keeps it open while the server refuses connections; cancel is a clean
// exit.
func TestTunnelListensWhileServerIsDown(t *testing.T) {
	if _, err := os.Stat("/usr/bin/ssh"); err != nil {
		t.Skip("needs ssh for ssh -G")
	}
	free := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	dead, local := free(), free()
	stateDir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "ssh_config")
	conf := fmt.Sprintf("Host down\n  HostName 127.0.0.1\n  Port 1\n  IdentityFile /nonexistent\n  UserKnownHostsFile /dev/null\n  LocalForward 127.0.0.1:%d 127.0.0.1:9\n", local)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := runTunnelCmd(ctx, []string{"--state-dir", stateDir, "-F", cfg, "-o", fmt.Sprintf("Port=%d", dead), "down"})
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", local))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("LocalForward never listened: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tunnel after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("tunnel did not stop on cancel")
	}
}

// sshServer is a minimal in-process SSH server on 127.0.0.1: any client
// key, keepalives answered, no channels. It returns its address and a
// known_hosts line.
func sshServer(t *testing.T) (string, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(hk)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go func() {
				_, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					c.Close()
					return
				}
				go func() {
					for r := range reqs {
						_ = r.Reply(false, nil)
					}
				}()
				for nc := range chans {
					_ = nc.Reject(ssh.UnknownChannelType, "no")
				}
			}()
		}
	}()
	addr := ln.Addr().String()
	return addr, knownhosts.Line([]string{knownhosts.Normalize(addr)}, hk.PublicKey())
}

// TestTunnelStatusAndRetry runs a tunnel in-process against an in-process
// server and reads its state back with 'tunnel status --json'; a status
// file left by a dead process shows as stale; 'tunnel retry' signals the
// live process (this one); on exit the tunnel removes its file.
func TestTunnelStatusAndRetry(t *testing.T) {
	if _, err := os.Stat("/usr/bin/ssh"); err != nil {
		t.Skip("needs ssh for ssh -G")
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	addr, khLine := sshServer(t)
	host, port, _ := net.SplitHostPort(addr)
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(khLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "id")
	if err := os.WriteFile(key, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	local := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := filepath.Join(dir, "ssh_config")
	conf := fmt.Sprintf("Host up\n  HostName %s\n  Port %s\n  User u\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  LocalForward 127.0.0.1:%d 127.0.0.1:9\n", host, port, key, kh, local)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(state, tunnel.StatusDir), 0o755); err != nil {
		t.Fatal(err)
	}
	dead := tunnel.StatusFile{PID: 0, Status: tunnel.Status{Host: "gone", State: tunnel.StateUp}}
	if err := atomicfile.WriteJSON(filepath.Join(state, tunnel.StatusDir, "gone.json"), dead, 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var tunnelLog string
	go func() {
		code, _, stderr := runCLIContext(ctx, []string{"tunnel", "--log-level", "debug", "--state-dir", state, "-F", cfg, "up"})
		tunnelLog = stderr
		done <- code
	}()
	var files []tunnel.StatusFile
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, stdout, stderr := runCLI(t, []string{"tunnel", "status", "--json", "--state-dir", state})
		if code != exitOK {
			t.Fatalf("tunnel status: exit %d: %s", code, stderr)
		}
		files = nil
		if err := json.Unmarshal([]byte(stdout), &files); err != nil {
			t.Fatalf("tunnel status --json: %v\n%s", err, stdout)
		}
		if len(files) == 2 && files[1].State == tunnel.StateUp && len(files[1].Forwards) == 1 && files[1].Forwards[0].State == tunnel.StateListening {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tunnel never reported up and listening: %s", stdout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f := files[0]; f.Host != "gone" || !f.Stale {
		t.Errorf("dead process file: %+v, want host gone, stale", f)
	}
	if f := files[1]; f.Host != "up" || f.Stale || f.PID != os.Getpid() || f.Reconnects != 0 || f.Forwards[0].Forward.BindPort != local {
		t.Errorf("live file: %+v", f)
	}
	code, stdout, _ := runCLI(t, []string{"tunnel", "status", "--state-dir", state})
	if code != exitOK || !strings.Contains(stdout, "stale") || !strings.Contains(stdout, "listening") {
		t.Errorf("tunnel status table: exit %d\n%s", code, stdout)
	}
	code, stdout, stderr := runCLI(t, []string{"tunnel", "retry", "--state-dir", state})
	if code != exitOK || !strings.Contains(stdout, fmt.Sprintf("signalled pid %d", os.Getpid())) {
		t.Errorf("tunnel retry: exit %d: %s %s", code, stdout, stderr)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("tunnel exit %d after cancel", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("tunnel did not stop on cancel")
	}
	// Once up, the tunnel gave back its start-up pages, once (the retry
	// above may bring it up again).
	if n := strings.Count(tunnelLog, "gave back start-up pages"); n != 1 {
		t.Errorf("the tunnel's log says %d times that it gave back its start-up pages, want once:\n%s", n, tunnelLog)
	}
	if _, err := os.Stat(tunnel.StatusPath(filepath.Join(state, tunnel.StatusDir), "up")); !os.IsNotExist(err) {
		t.Errorf("status file left after exit: %v", err)
	}
}

// TestTunnelKeygen makes a key for a Host with forwards of each kind
// the line restricts, parses it back and checks the authorized_keys line.
func TestTunnelKeygen(t *testing.T) {
	if _, err := os.Stat("/usr/bin/ssh"); err != nil {
		t.Skip("needs ssh for ssh -G")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ssh_config")
	conf := "Host db\n  HostName 127.0.0.1\n  LocalForward 127.0.0.1:15432 db.internal:5432\n  LocalForward 6379 cache.internal:6379\n  RemoteForward 8022 127.0.0.1:22\n  RemoteForward 192.0.2.1:8080 127.0.0.1:80\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "tunnel_key")
	args := []string{"tunnel", "keygen", "-F", cfg, "db", "--out", key, "--from", "203.0.113.0/24", "--permitopen", "extra.internal:443"}
	code, stdout, stderr := runCLI(t, args)
	if code != exitOK {
		t.Fatalf("keygen: exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatalf("parse key: %v", err)
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v (%v), want 0600", st.Mode(), err)
	}
	pub, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(stdout))
	if err != nil {
		t.Fatalf("parse printed line %q: %v", stdout, err)
	}
	if pub.Type() != ssh.KeyAlgoED25519 || !bytes.Equal(pub.Marshal(), signer.PublicKey().Marshal()) {
		t.Errorf("printed key %s is not the generated one", pub.Type())
	}
	want := []string{
		"restrict", "port-forwarding",
		`permitopen="db.internal:5432"`, `permitopen="cache.internal:6379"`, `permitopen="extra.internal:443"`,
		`permitlisten="8022"`, `permitlisten="192.0.2.1:8080"`,
		`from="203.0.113.0/24"`,
	}
	if strings.Join(opts, ",") != strings.Join(want, ",") {
		t.Errorf("options\n got %q\nwant %q", opts, want)
	}
	pubFile, err := os.ReadFile(key + ".pub")
	if err != nil || !strings.HasPrefix(string(pubFile), "ssh-ed25519 ") {
		t.Errorf("public key file %q (%v)", pubFile, err)
	}

	// No overwrite without --force; with it, a new key.
	if code, _, stderr := runCLI(t, args); code == exitOK || !strings.Contains(stderr, "--force") {
		t.Errorf("second keygen without --force: exit %d: %s", code, stderr)
	}
	if b2, _ := os.ReadFile(key); !bytes.Equal(b, b2) {
		t.Error("key changed without --force")
	}
	if code, _, stderr := runCLI(t, append(args, "--force")); code != exitOK {
		t.Errorf("keygen --force: exit %d: %s", code, stderr)
	}
	if b2, _ := os.ReadFile(key); bytes.Equal(b, b2) {
		t.Error("key not replaced with --force")
	}
	if code, _, _ := runCLI(t, []string{"tunnel", "keygen", "-F", cfg, "db", "--out", filepath.Join(dir, "k2"), "--from", "not-an-address"}); code != exitUsage {
		t.Errorf("bad --from: exit %d, want %d", code, exitUsage)
	}
	if _, err := os.Stat(filepath.Join(dir, "k2")); err == nil {
		t.Error("key written despite a bad --from")
	}
}
