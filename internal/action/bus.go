package action

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/godbus/dbus/v5"
)

// PowerBus asks the service manager to power the machine off. It is where
// the poweroff action meets D-Bus, so that tests can put a fake in its
// place and never power the machine off.
type PowerBus interface {
	// PowerOff asks for the power-off and returns once it was accepted,
	// naming who accepted it (e.g. "logind over D-Bus"). An error wrapping
	// ErrNoBus or ErrNoPowerService means nobody could be asked; any other
	// error is a refusal or a failure of whoever was asked.
	PowerOff(ctx context.Context) (via string, err error)
}

// Errors of a PowerBus after which the poweroff action falls back to a
// command.
var (
	// ErrNoBus: the D-Bus system bus cannot be reached (no dbus-daemon,
	// no socket, a bus that does not answer).
	ErrNoBus = errors.New("no D-Bus system bus")
	// ErrNoPowerService: the bus answers, but neither logind nor systemd
	// is on it.
	ErrNoPowerService = errors.New("neither logind nor systemd on the D-Bus system bus")
)

// DefaultSystemBusAddress is the system bus when DBUS_SYSTEM_BUS_ADDRESS
// is not set.
const DefaultSystemBusAddress = "unix:path=/run/dbus/system_bus_socket"

// D-Bus names of the two services that can power the machine off.
const (
	login1Service  = "org.freedesktop.login1"
	login1Path     = "/org/freedesktop/login1"
	login1PowerOff = "org.freedesktop.login1.Manager.PowerOff"

	systemd1Service   = "org.freedesktop.systemd1"
	systemd1Path      = "/org/freedesktop/systemd1"
	systemd1StartUnit = "org.freedesktop.systemd1.Manager.StartUnit"
)

// SystemBus powers off through systemd over the D-Bus system bus, as
// `systemctl poweroff` does: logind's Manager.PowerOff, which honours
// logind's inhibitor locks and authorizes a caller holding CAP_SYS_BOOT
// (else asks polkit); when logind is not on the bus, systemd's own
// Manager.StartUnit("poweroff.target", "replace-irreversibly"), systemctl's
// fallback. Either returns once the power-off job is queued: services
// are then stopped in order, the journal flushed, file systems unmounted.
// Neither needs the reboot(2) system call in the caller, so a sandbox may
// forbid it.
type SystemBus struct {
	// Address is the bus address; empty means $DBUS_SYSTEM_BUS_ADDRESS,
	// else DefaultSystemBusAddress.
	Address string
}

var _ PowerBus = SystemBus{}

// PowerOff implements PowerBus.
func (b SystemBus) PowerOff(ctx context.Context) (string, error) {
	addr := b.Address
	if addr == "" {
		addr = os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
	}
	if addr == "" {
		addr = DefaultSystemBusAddress
	}
	conn, err := dbus.Connect(addr, dbus.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w: %w", addr, ErrNoBus, err)
	}
	defer conn.Close()

	err = conn.Object(login1Service, login1Path).CallWithContext(ctx, login1PowerOff, 0, false).Err
	if err == nil {
		return "logind over D-Bus", nil
	}
	if !absent(err) {
		return "", fmt.Errorf("ask logind to power off: %w", err)
	}
	loginErr := err
	var job dbus.ObjectPath
	err = conn.Object(systemd1Service, systemd1Path).CallWithContext(ctx, systemd1StartUnit, 0, "poweroff.target", "replace-irreversibly").Store(&job)
	if err == nil {
		return "systemd over D-Bus", nil
	}
	if !absent(err) {
		return "", fmt.Errorf("ask systemd to start poweroff.target: %w", err)
	}
	return "", fmt.Errorf("%w: logind: %w; systemd: %w", ErrNoPowerService, loginErr, err)
}

// absent tells whether a D-Bus call failed because nobody on the bus
// offers the method: no such name (and none to activate), object, interface
// or method.
func absent(err error) bool {
	var e dbus.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Name {
	case "org.freedesktop.DBus.Error.ServiceUnknown",
		"org.freedesktop.DBus.Error.NameHasNoOwner",
		"org.freedesktop.DBus.Error.UnknownObject",
		"org.freedesktop.DBus.Error.UnknownInterface",
		"org.freedesktop.DBus.Error.UnknownMethod":
		return true
	}
	// Activation of the name failed: the service is not installed here.
	return strings.HasPrefix(e.Name, "org.freedesktop.DBus.Error.Spawn.")
}
