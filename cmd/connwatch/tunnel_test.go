package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	for _, args := range [][]string{{}, {"-o", "NoEquals", "h"}, {"--log-format", "xml", "h"}} {
		_, err := runTunnelCmd(context.Background(), args)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: err = %v, want a usage error", args, err)
		}
	}
	out, err := runTunnelCmd(context.Background(), []string{"--help"})
	for _, want := range []string{"ssh -G", "ServerAliveInterval", "SIGUSR1", "accept-new", "--option"} {
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
	cfg := filepath.Join(t.TempDir(), "ssh_config")
	conf := fmt.Sprintf("Host down\n  HostName 127.0.0.1\n  Port 1\n  IdentityFile /nonexistent\n  UserKnownHostsFile /dev/null\n  LocalForward 127.0.0.1:%d 127.0.0.1:9\n", local)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := runTunnelCmd(ctx, []string{"-F", cfg, "-o", fmt.Sprintf("Port=%d", dead), "down"})
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
