package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/connwatch/connwatch/internal/agent"
	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
	promsink "github.com/connwatch/connwatch/internal/sink/prometheus"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
	"github.com/connwatch/connwatch/internal/testkit/netnstest"
	"github.com/connwatch/connwatch/internal/testkit/openvpntest"
	"github.com/connwatch/connwatch/internal/testkit/wgtest"
)

// emptyProc makes a procfs-shaped tree of a machine with no processes,
// booted long ago, so that only the VPN sources see sessions.
func emptyProc(t *testing.T, dir string) string {
	t.Helper()
	proc := filepath.Join(dir, "proc")
	for _, d := range []string{filepath.Join(proc, "sys", "kernel", "random"), filepath.Join(proc, "net")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range map[string]string{
		"stat":                      "btime 1700000000\n",
		"sys/kernel/random/boot_id": "3a1f6c1e-0000-4000-8000-000000000002\n",
	} {
		if err := os.WriteFile(filepath.Join(proc, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return proc
}

// vpnAgent runs `connwatch agent` in this process with an empty /proc,
// every event to a file and every notification text to another, until
// the test ends.
type vpnAgent struct {
	events, texts string
	cancel        context.CancelFunc
	done          chan int
}

func startVPNAgent(t *testing.T, args ...string) *vpnAgent {
	t.Helper()
	dir := t.TempDir()
	a := &vpnAgent{events: filepath.Join(dir, "events.jsonl"), texts: filepath.Join(dir, "texts"), done: make(chan int, 1)}
	// Stopped by the test's cleanup; the timeout only bounds a test that
	// hangs (the VPN bench runs for minutes).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	a.cancel = cancel
	base := []string{"agent", "--proc", emptyProc(t, dir), "--state-dir", filepath.Join(dir, "state"), "--events", a.events,
		"--metrics-addr", "", "--sshd-log", "", "--wall=false", "--notify-events", "session_start,session_end",
		"--notify-command", `printf '%s\n' "$CONNWATCH_TEXT" >> ` + a.texts}
	go func() {
		code, _, stderr := runCLIContext(ctx, append(base, args...))
		if code != exitOK {
			t.Errorf("agent exit %d: %s", code, stderr)
		}
		a.done <- code
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
			t.Error("the agent did not stop")
		}
	})
	return a
}

// sessionEvents returns the session_start and session_end events of kind.
func (a *vpnAgent) sessionEvents(t *testing.T, kind session.Kind) []event.Event {
	t.Helper()
	f, err := os.Open(a.events)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []event.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event line %q: %v", sc.Text(), err)
		}
		if e.Session != nil && e.Session.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// waitEvents waits (bounded) until n session events of kind were written.
func (a *vpnAgent) waitEvents(t *testing.T, kind session.Kind, n int, within time.Duration) []event.Event {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		evs := a.sessionEvents(t, kind)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s session events after %v, want %d; events:\n%s", len(evs), kind, within, n, readFile(a.events))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitText waits (bounded) until a notification text contains want.
func (a *vpnAgent) waitText(t *testing.T, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(readFile(a.texts), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no notification with %q after %v; texts:\n%s", want, within, readFile(a.texts))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentClientVPNShortConnection: a connection that begins and ends
// between two polls of DescribeClientVpnConnections (the classic
// ActiveConnectionsCount alarm never sees it) is a session_start and a
// session_end, with who and when, and a notification.
func TestAgentClientVPNShortConnection(t *testing.T) {
	const endpoint = "cvpn-endpoint-0123456789abcdef0"
	srv := awstest.New(t)
	srv.Env(t)
	srv.AddClientVPNEndpoint(endpoint)
	a := startVPNAgent(t, "--aws-client-vpn-endpoint", endpoint, "--aws-client-vpn-poll-interval", "5s")
	// The first poll: nobody.
	for deadline := time.Now().Add(10 * time.Second); len(srv.Calls("ec2", "DescribeClientVpnConnections")) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the agent never called DescribeClientVpnConnections")
		}
	}
	start := time.Now().UTC().Truncate(time.Second)
	id := srv.ConnectClientVPN(endpoint, awstest.ClientVPNConnection{CommonName: "alice.vpn.example.com", Username: "alice", ClientIP: "172.31.0.225", EstablishedAt: start, IngressBytes: 4200})
	srv.DisconnectClientVPN(endpoint, id)

	evs := a.waitEvents(t, session.KindAWSClientVPN, 2, 10*time.Second)
	if evs[0].Type != event.SessionStart || evs[1].Type != event.SessionEnd {
		t.Fatalf("events %s %s, want session_start session_end", evs[0].Type, evs[1].Type)
	}
	s := evs[0].Session
	if s.ID != id || s.User != "alice" || s.VPN == nil || s.VPN.Server != endpoint || s.VPN.CommonName != "alice.vpn.example.com" || s.VPN.VirtualAddr != "172.31.0.225" {
		t.Errorf("session %+v (vpn %+v)", s, s.VPN)
	}
	if !evs[0].Time.Equal(start) || evs[1].Time.Before(start) || evs[1].Time.After(time.Now()) {
		t.Errorf("start %v end %v, want the connection's own times (began %v)", evs[0].Time, evs[1].Time, start)
	}
	a.waitText(t, "new VPN connection by alice (tunnel address 172.31.0.225) to AWS Client VPN endpoint "+endpoint, 10*time.Second)
	if n := len(a.sessionEvents(t, session.KindAWSClientVPN)); n != 2 {
		t.Errorf("%d events for one connection", n)
	}
}

// TestAgentWireGuardPeer: a real WireGuard peer (wireguard-go in a
// namespace) that handshakes is a session of the name the config gives
// its key; when it goes away its session ends after the handshake
// timeout.
func TestAgentWireGuardPeer(t *testing.T) {
	wgtest.Require(t)
	nsA, nsB := netnstest.New(t), netnstest.New(t)
	aAddr, _ := nsA.Link(t, nsB)
	srv := wgtest.Server(t, nsA)
	cli := wgtest.Client(t, nsB, srv, aAddr, 51821, wgtest.TunnelNet+"2")

	cfg := filepath.Join(t.TempDir(), "connwatch.toml")
	text := fmt.Sprintf("[wireguard]\nenabled = true\ninterfaces = [%q]\npoll_interval = \"200ms\"\nhandshake_timeout = \"2s\"\n[wireguard.peers]\n%q = \"alice\"\n", srv.Iface, cli.Pub())
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startVPNAgent(t, "--config", cfg)
	wgtest.Ping(t, nsB, wgtest.ServerIP)
	evs := a.waitEvents(t, session.KindWireGuard, 1, 5*time.Second)
	s := evs[0].Session
	if evs[0].Type != event.SessionStart || s.User != "alice" || s.RemoteAddr == "" || s.RemotePort != 51821 || s.VPN == nil || s.VPN.Server != srv.Iface || s.VPN.PublicKey != cli.Pub() {
		t.Errorf("start %s %+v (vpn %+v)", evs[0].Type, s, s.VPN)
	}
	a.waitText(t, "new VPN connection by alice from "+s.RemoteAddr+" port 51821", 5*time.Second)

	cli.Stop(t, syscall.SIGTERM)
	evs = a.waitEvents(t, session.KindWireGuard, 2, 6*time.Second)
	if evs[1].Type != event.SessionEnd || evs[1].Session.ID != s.ID {
		t.Errorf("second event %s %+v, want the end of %s", evs[1].Type, evs[1].Session, s.ID)
	}
}

// TestAgentOpenVPNClient: a client of a real OpenVPN server, read over
// its management interface with a password, is a session named by its
// username, and ends when the client leaves.
func TestAgentOpenVPNClient(t *testing.T) {
	srv := openvpntest.Start(t, openvpntest.Options{Proto: "tcp", Management: openvpntest.ManagementUnix, ManagementPassword: "s3cret",
		Users: map[string]string{"alice": "wonderland"}})
	a := startVPNAgent(t, "--openvpn-management", "unix:"+srv.ManagementSocket, "--openvpn-password-file", srv.ManagementPasswordFile,
		"--openvpn-poll-interval", "200ms")
	cl := srv.Connect(t, "alice-laptop", openvpntest.ClientOptions{Username: "alice", Password: "wonderland"})
	evs := a.waitEvents(t, session.KindOpenVPN, 1, 5*time.Second)
	s := evs[0].Session
	// The virtual address may come a poll later: the server lists an
	// authenticated client before it assigns one (the first poll can
	// land in between), so the start need not carry it.
	if evs[0].Type != event.SessionStart || s.User != "alice" || s.RemoteAddr != srv.ClientAddr || s.VPN == nil || s.VPN.CommonName != "alice-laptop" {
		t.Errorf("start %s %+v (vpn %+v)", evs[0].Type, s, s.VPN)
	}
	a.waitText(t, "new VPN connection by alice from "+srv.ClientAddr, 5*time.Second)
	cl.Stop()
	evs = a.waitEvents(t, session.KindOpenVPN, 2, 5*time.Second)
	if evs[1].Type != event.SessionEnd || evs[1].Session.ID != s.ID {
		t.Errorf("second event %s %+v, want the end of %s", evs[1].Type, evs[1].Session, s.ID)
	}
}

// TestStatusPollsVPNSources: without a running agent, `status --config`
// polls the VPN sources the file enables, once, next to the SSH sessions.
func TestStatusPollsVPNSources(t *testing.T) {
	const endpoint = "cvpn-endpoint-0123456789abcdef0"
	srv := awstest.New(t)
	srv.Env(t)
	srv.AddClientVPNEndpoint(endpoint)
	id := srv.ConnectClientVPN(endpoint, awstest.ClientVPNConnection{CommonName: "bob.vpn.example.com", ClientIP: "172.31.0.9"})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "connwatch.toml")
	if err := os.WriteFile(cfg, []byte("[aws_client_vpn]\nenabled = true\nendpoints = [\""+endpoint+"\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, []string{"status", "--json", "--proc", emptyProc(t, dir), "--state-dir", filepath.Join(dir, "none"), "--config", cfg})
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got session.Snapshot
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if len(got.Sessions) != 1 || got.Sessions[0].ID != id || got.Sessions[0].User != "bob.vpn.example.com" || got.Sessions[0].Kind != session.KindAWSClientVPN {
		t.Errorf("sessions %+v", got.Sessions)
	}
	code, stdout, _ = runCLI(t, []string{"status", "--proc", emptyProc(t, dir), "--state-dir", filepath.Join(dir, "none"), "--config", cfg})
	if code != exitOK || !strings.Contains(stdout, "aws-client-vpn "+endpoint) {
		t.Errorf("table (exit %d):\n%s", code, stdout)
	}

	// The endpoint cannot be listed: said, and the view is incomplete.
	srv.SetClientVPNFailure(endpoint, awstest.CodeUnauthorizedOperation, "not allowed")
	code, stdout, _ = runCLI(t, []string{"status", "--json", "--proc", emptyProc(t, dir), "--state-dir", filepath.Join(dir, "none"), "--config", cfg})
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || code != exitOK || got.Complete || !got.BlindFor(session.KindAWSClientVPN) || got.BlindFor(session.KindSSH) {
		t.Errorf("failing endpoint: exit %d, %+v", code, got)
	}
}

// TestVPNFlagsMergeWithTheConfigFile: flags set fields of the file's
// OpenVPN server instead of replacing it, and --wireguard-interface
// enables WireGuard.
func TestVPNFlagsMergeWithTheConfigFile(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "connwatch.toml")
	text := "[openvpn]\nenabled = true\n[[openvpn.server]]\nname = \"office\"\nmanagement = \"unix:/run/openvpn/office.sock\"\npassword_file = \"/etc/openvpn/pw\"\n"
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	resolve := func(args ...string) (config.Agent, error) {
		f := &agentFlags{}
		fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
		f.register(fs)
		if err := fs.Parse(append([]string{"--config", cfgPath}, args...)); err != nil {
			t.Fatal(err)
		}
		return f.resolve(fs)
	}
	cfg, err := resolve("--openvpn-management", "tcp:127.0.0.1:7505", "--wireguard-interface", "wg0")
	if err != nil {
		t.Fatal(err)
	}
	want := config.OpenVPNServer{Name: "office", Management: "tcp:127.0.0.1:7505", PasswordFile: "/etc/openvpn/pw"}
	if len(cfg.OpenVPN.Servers) != 1 || cfg.OpenVPN.Servers[0] != want {
		t.Errorf("servers %+v, want %+v", cfg.OpenVPN.Servers, want)
	}
	if !cfg.WireGuard.Enabled || fmt.Sprint(cfg.WireGuard.Interfaces) != "[wg0]" {
		t.Errorf("wireguard %+v", cfg.WireGuard)
	}
	// A status file as well as the file's management interface: refused,
	// naming the server.
	if _, err := resolve("--openvpn-status-file", "/run/openvpn/status.log"); err == nil || !strings.Contains(err.Error(), "openvpn.server[0]") {
		t.Errorf("both management and status file: %v", err)
	}
	if _, err := resolve("--keep-awake-kinds="); err == nil || !strings.Contains(err.Error(), "idle.keep_awake_kinds") {
		t.Errorf("an empty keep-awake list: %v", err)
	}
}

// TestMetricsKeepAFailingSourcesSessions: while a VPN source fails, the
// tracker (and the policy) keep its sessions, and so does
// connwatch_sessions: an alert on it does not fire for nothing.
func TestMetricsKeepAFailingSourcesSessions(t *testing.T) {
	m := promsink.New(promsink.Options{Kinds: []session.Kind{session.KindSSH, session.KindWireGuard}})
	ob := agent.Observation{Now: time.Now(), Source: "sshd", Sessions: []session.Session{{ID: "wg-1", Kind: session.KindWireGuard, User: "alice"}}}
	ob.Snapshot.Warn(session.Warning{Code: agent.PollWarning, Kind: session.KindWireGuard, Blind: true})
	metricsObserver{m}.Observe(ob)
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got float64 = -1
	for _, mf := range mfs {
		if mf.GetName() != "connwatch_sessions" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == "wireguard" {
					got = mt.GetGauge().GetValue()
				}
			}
		}
	}
	if got != 1 {
		t.Errorf("connwatch_sessions{kind=\"wireguard\"} = %v, want 1", got)
	}
}

func TestConfigCheckNamesWatchedKinds(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vpn.toml")
	text := "[idle]\nkeep_awake_kinds = [\"ssh\"]\n[wireguard]\nenabled = true\n[aws_client_vpn]\nenabled = true\nendpoints = [\"cvpn-endpoint-0123456789abcdef0\"]\n"
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, []string{"config", "check", p})
	if code != exitOK || !strings.Contains(stdout, "watching ssh, wireguard, aws-client-vpn; kept up by ssh)") {
		t.Errorf("exit %d: %s%s", code, stdout, stderr)
	}
}
