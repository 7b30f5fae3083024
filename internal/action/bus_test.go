package action_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/connwatch/connwatch/internal/action"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// startBus runs a private dbus-daemon that lets anyone own any name and
// call anything, and returns its address. It listens on a socket in a
// temporary directory: nothing of the machine's own bus is touched.
func startBus(t *testing.T) string {
	t.Helper()
	daemon := testproc.RequireBinary(t, "action", "dbus-daemon")
	dir := t.TempDir()
	conf := filepath.Join(dir, "bus.conf")
	err := os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path=`+filepath.Join(dir, "system_bus_socket")+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemon, "--config-file="+conf, "--nofork", "--nopidfile", "--print-address")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testproc.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-daemon: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if !testproc.WaitClosed(done, 5*time.Second) {
			t.Errorf("dbus-daemon %d did not exit", cmd.Process.Pid)
		}
	})
	addrc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addrc <- strings.TrimSpace(line)
	}()
	select {
	case addr := <-addrc:
		if addr == "" {
			t.Fatalf("dbus-daemon printed no address: %s", stderr.String())
		}
		return addr
	case <-time.After(10 * time.Second):
		t.Fatalf("dbus-daemon printed no address in 10s: %s", stderr.String())
	}
	return ""
}

// fakeLogind is org.freedesktop.login1's Manager with only PowerOff, which
// answers refuse (nil: success) and records its argument.
type fakeLogind struct {
	refuse *dbus.Error
	calls  chan bool
}

func (l *fakeLogind) PowerOff(interactive bool) *dbus.Error {
	l.calls <- interactive
	return l.refuse
}

// fakeSystemd is org.freedesktop.systemd1's Manager with only StartUnit.
type fakeSystemd struct {
	calls chan [2]string
}

func (s *fakeSystemd) StartUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	s.calls <- [2]string{name, mode}
	return "/org/freedesktop/systemd1/job/42", nil
}

// serve connects to the bus at addr, owns name and exports v there as
// iface; the name is released when the test ends.
func serve(t *testing.T, addr, name string, path dbus.ObjectPath, iface string, v any) {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.Export(v, path, iface); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(name, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own %s: %v, %v", name, reply, err)
	}
}

// TestSystemBus runs SystemBus against a real dbus-daemon on which the
// test plays logind and systemd, one, both or neither.
func TestSystemBus(t *testing.T) {
	addr := startBus(t)
	bus := action.SystemBus{Address: addr}

	t.Run("logind", func(t *testing.T) {
		logind := &fakeLogind{calls: make(chan bool, 1)}
		systemd := &fakeSystemd{calls: make(chan [2]string, 1)}
		serve(t, addr, "org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager", logind)
		serve(t, addr, "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", systemd)
		via, err := bus.PowerOff(t.Context())
		if err != nil || via != "logind over D-Bus" {
			t.Fatalf("PowerOff = %q, %v; want logind", via, err)
		}
		if interactive := <-logind.calls; interactive {
			t.Error("PowerOff(interactive=true): an agent cannot answer a password prompt")
		}
		if len(systemd.calls) != 0 {
			t.Error("systemd was asked too")
		}
	})

	t.Run("systemd without logind", func(t *testing.T) {
		systemd := &fakeSystemd{calls: make(chan [2]string, 1)}
		serve(t, addr, "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", systemd)
		via, err := bus.PowerOff(t.Context())
		if err != nil || via != "systemd over D-Bus" {
			t.Fatalf("PowerOff = %q, %v; want systemd", via, err)
		}
		if got := <-systemd.calls; got != [2]string{"poweroff.target", "replace-irreversibly"} {
			t.Errorf("StartUnit%q, want poweroff.target replace-irreversibly", got)
		}
	})

	t.Run("logind refuses", func(t *testing.T) {
		logind := &fakeLogind{calls: make(chan bool, 1), refuse: dbus.NewError("org.freedesktop.DBus.Error.AccessDenied", []any{"Access denied"})}
		systemd := &fakeSystemd{calls: make(chan [2]string, 1)}
		serve(t, addr, "org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager", logind)
		serve(t, addr, "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", systemd)
		_, err := bus.PowerOff(t.Context())
		var derr dbus.Error
		if !errors.As(err, &derr) || derr.Name != "org.freedesktop.DBus.Error.AccessDenied" || errors.Is(err, action.ErrNoPowerService) {
			t.Errorf("PowerOff = %v, want logind's AccessDenied", err)
		}
		if len(systemd.calls) != 0 {
			t.Error("systemd was asked after logind refused")
		}
	})

	t.Run("neither", func(t *testing.T) {
		_, err := bus.PowerOff(t.Context())
		if !errors.Is(err, action.ErrNoPowerService) || errors.Is(err, action.ErrNoBus) {
			t.Errorf("PowerOff = %v, want ErrNoPowerService", err)
		}
	})

	t.Run("DBUS_SYSTEM_BUS_ADDRESS", func(t *testing.T) {
		logind := &fakeLogind{calls: make(chan bool, 1)}
		serve(t, addr, "org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager", logind)
		t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", addr)
		if via, err := (action.SystemBus{}).PowerOff(t.Context()); err != nil || via != "logind over D-Bus" {
			t.Errorf("SystemBus{} = %q, %v; want logind at $DBUS_SYSTEM_BUS_ADDRESS", via, err)
		}
	})
}

// TestPoweroffFallbackOrder runs the poweroff action with the real
// SystemBus: logind first, systemd's own manager next, a command only
// when there is no bus or no service on it, and a clear error when
// nothing works.
func TestPoweroffFallbackOrder(t *testing.T) {
	addr := startBus(t)
	all := lookIn([]string{"systemctl", "shutdown", "poweroff"})
	req := action.Request{Reason: "idle"}

	t.Run("logind", func(t *testing.T) {
		serve(t, addr, "org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager", &fakeLogind{calls: make(chan bool, 1)})
		run := &fakeRunner{}
		res, err := (&action.Poweroff{Bus: action.SystemBus{Address: addr}, Runner: run, SystemdDir: t.TempDir(), LookPath: all}).Do(t.Context(), req)
		if err != nil || res.Summary != "powering off through logind over D-Bus: idle" || len(run.calls) != 0 {
			t.Errorf("Do = %q, %v, commands %q; want logind and no command", res.Summary, err, run.calls)
		}
	})

	t.Run("bus without logind or systemd", func(t *testing.T) {
		run := &fakeRunner{}
		res, err := (&action.Poweroff{Bus: action.SystemBus{Address: addr}, Runner: run, SystemdDir: t.TempDir(), LookPath: all}).Do(t.Context(), req)
		if err != nil || res.Summary != "powering off with /sbin/systemctl poweroff (neither logind nor systemd on the D-Bus system bus): idle" {
			t.Errorf("Do = %q, %v; want systemctl poweroff", res.Summary, err)
		}
	})

	noSocket := action.SystemBus{Address: "unix:path=" + filepath.Join(t.TempDir(), "absent")}
	t.Run("no bus", func(t *testing.T) {
		run := &fakeRunner{}
		res, err := (&action.Poweroff{Bus: noSocket, Runner: run, SystemdDir: filepath.Join(t.TempDir(), "absent"), LookPath: all}).Do(t.Context(), req)
		if err != nil || res.Summary != "powering off with /sbin/shutdown -h now (no D-Bus system bus): idle" {
			t.Errorf("Do = %q, %v; want shutdown -h now", res.Summary, err)
		}
	})

	t.Run("nothing", func(t *testing.T) {
		_, err := (&action.Poweroff{Bus: noSocket, Runner: &fakeRunner{}, SystemdDir: t.TempDir(), LookPath: lookIn(nil)}).Do(t.Context(), req)
		if !errors.Is(err, action.ErrNoBus) || !errors.Is(err, action.ErrNoPoweroffCommand) ||
			!strings.Contains(err.Error(), "no such file or directory") {
			t.Errorf("Do = %v, want ErrNoBus (with the dial error) and ErrNoPoweroffCommand", err)
		}
	})
}
