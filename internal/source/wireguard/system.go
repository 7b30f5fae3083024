package wireguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
)

// uapiDir is where userspace WireGuard implementations put their
// control sockets, as wgctrl and wg(8) look for them.
const uapiDir = "/var/run/wireguard"

// systemClient is wgctrl's client, able to name devices without reading
// them: kernel devices are links of kind "wireguard", userspace ones
// sockets NAME.sock in uapiDir.
type systemClient struct{ *wgctrl.Client }

var (
	_ Client       = (*wgctrl.Client)(nil)
	_ DeviceLister = systemClient{}
)

// DeviceNames implements DeviceLister.
func (systemClient) DeviceNames() ([]string, error) {
	return deviceNames(netlink.LinkList, uapiDir)
}

func deviceNames(links func() ([]netlink.Link, error), dir string) ([]string, error) {
	var names []string
	ls, err := links()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range ls {
		if l.Type() == "wireguard" {
			names = append(names, l.Attrs().Name)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list uapi sockets: %w", err)
	}
	for _, e := range ents {
		if e.Type()&fs.ModeSocket == 0 {
			continue
		}
		name := e.Name()
		names = append(names, strings.TrimSuffix(name, filepath.Ext(name)))
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}
