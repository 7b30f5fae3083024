package wireguard

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/connwatch/connwatch/internal/clock"
)

// BenchmarkPoll measures a steady-state poll of one device with 1,000
// connected peers, every one of which received bytes since the previous
// poll (the fake client costs nothing; wgctrl's own parsing is not
// measured).
func BenchmarkPoll(b *testing.B) {
	const n = 1000
	peers := make([]wgtypes.Peer, n)
	names := map[string]string{}
	for i := range peers {
		var k wgtypes.Key
		k[0], k[1] = byte(i), byte(i>>8)
		peers[i] = wgtypes.Peer{
			PublicKey:         k,
			LastHandshakeTime: t0.Add(-time.Duration(i) * time.Millisecond),
			ReceiveBytes:      int64(i),
			TransmitBytes:     int64(i),
			Endpoint:          net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), uint16(40000+i))),
			AllowedIPs:        []net.IPNet{{IP: net.IPv4(10, 8, byte(i>>8), byte(i)).To4(), Mask: net.CIDRMask(32, 32)}},
		}
		if i%2 == 0 {
			names[k.String()] = fmt.Sprintf("user%d", i)
		}
	}
	f := newFake()
	f.add("wg0", 51820, peers...)
	s, err := New(f, Config{Names: names, Clock: clock.NewFake(t0.Add(10 * time.Second))})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if snap, err := s.Poll(ctx); err != nil || len(snap.Sessions) != n {
		b.Fatalf("first poll: %d sessions, %v", len(snap.Sessions), err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i := range peers {
			peers[i].ReceiveBytes++
		}
		snap, err := s.Poll(ctx)
		if err != nil || len(snap.Sessions) != n {
			b.Fatalf("poll: %d sessions, %v", len(snap.Sessions), err)
		}
	}
}
