package openvpn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ErrFormat is wrapped by the errors of text that is not an OpenVPN
// status.
var ErrFormat = errors.New("not an openvpn status")

// ErrTruncated is wrapped by the error of a status that ends before its
// END line: a status file read while OpenVPN rewrote it, or a management
// connection that closed early.
var ErrTruncated = errors.New("openvpn status ends before END")

// UndefName is what OpenVPN prints for a common name or username it does
// not know (yet).
const UndefName = "UNDEF"

// Status is an OpenVPN server's status: what the status file holds and
// the management command "status" prints.
type Status struct {
	// Title is the server's version line (versions 2 and 3 only).
	Title string
	// Updated is when the server wrote the status.
	Updated time.Time
	// Clients are the connections the server holds, including those
	// still in their TLS handshake (CommonName UNDEF, no virtual
	// address).
	Clients []Client
	// Routes are the server's internal routing table.
	Routes []Route
}

// Client is one line of the client list.
type Client struct {
	CommonName string
	// RealAddr is the client's outer address as OpenVPN prints it:
	// "198.51.100.7:51234" for IPv4 (also over a dual-stack socket),
	// "2001:db8::7" for IPv6, without the port.
	RealAddr string
	// VirtualAddr and VirtualIPv6 are the client's addresses in the VPN.
	// Version 1 has no such column: they are taken from the routing
	// table's host routes of the client.
	VirtualAddr, VirtualIPv6 string
	// BytesIn is OpenVPN's "Bytes Received" (from the client), BytesOut
	// its "Bytes Sent" (to the client).
	BytesIn, BytesOut uint64
	// ConnectedSince is when the connection began.
	ConnectedSince time.Time
	// Username is the name the client authenticated with; empty when it
	// sent none (OpenVPN's UNDEF).
	Username string
	// ClientID is the management interface's id of the client, PeerID
	// the data channel's; -1 when the status has no such column (version
	// 1, OpenVPN before 2.4) or no value.
	ClientID, PeerID int64
	// Cipher is the data channel cipher (OpenVPN 2.5 on).
	Cipher string
}

// Route is one line of the routing table.
type Route struct {
	// VirtualAddr is an address or network in the VPN; a "C" suffix
	// marks a cached route.
	VirtualAddr string
	CommonName  string
	RealAddr    string
	// LastRef is the last time a packet was routed to or from
	// VirtualAddr.
	LastRef time.Time
}

// Column names of the client list and the routing table.
const (
	colCommonName  = "Common Name"
	colRealAddr    = "Real Address"
	colVirtualAddr = "Virtual Address"
	colVirtualIPv6 = "Virtual IPv6 Address"
	colBytesIn     = "Bytes Received"
	colBytesOut    = "Bytes Sent"
	colSince       = "Connected Since"
	colSinceUnix   = "Connected Since (time_t)"
	colUsername    = "Username"
	colClientID    = "Client ID"
	colPeerID      = "Peer ID"
	colCipher      = "Data Channel Cipher"
	colLastRef     = "Last Ref"
	colLastRefUnix = "Last Ref (time_t)"
)

// Time layouts of the human-readable time columns: OpenVPN 2.6 on, and
// the ctime(3) layout before.
var timeLayouts = []string{"2006-01-02 15:04:05", time.ANSIC}

// maxLine bounds a status line.
const maxLine = 1 << 20

// ParseStatus parses an OpenVPN status of any version: 1 (the default
// status file), 2 (comma-separated HEADER, CLIENT_LIST, ROUTING_TABLE,
// TIME lines) or 3 (the same, tab-separated; what the management command
// "status 3" prints). Columns are found by the names on the HEADER lines
// (the header line of version 1's sections), so that OpenVPN 2.3 to 2.6
// and later versions with more columns all parse. Times that OpenVPN
// prints only as local time (all of version 1's) are read in time.Local.
// Errors name the line.
func ParseStatus(r io.Reader) (*Status, error) { return ParseStatusIn(r, time.Local) }

// ParseStatusIn is ParseStatus reading local times in loc.
func ParseStatusIn(r io.Reader, loc *time.Location) (*Status, error) {
	p := &parser{sc: bufio.NewScanner(r), loc: loc, st: &Status{}}
	p.sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	if err := p.parse(); err != nil {
		return nil, err
	}
	return p.st, nil
}

type parser struct {
	sc   *bufio.Scanner
	loc  *time.Location
	st   *Status
	line int
}

// next returns the next line without its line ending.
func (p *parser) next() (string, bool, error) {
	if !p.sc.Scan() {
		if err := p.sc.Err(); err != nil {
			return "", false, fmt.Errorf("line %d: read status: %w", p.line+1, err)
		}
		return "", false, nil
	}
	p.line++
	return strings.TrimSuffix(p.sc.Text(), "\r"), true, nil
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("line %d: %w: %s", p.line, ErrFormat, fmt.Sprintf(format, args...))
}

func (p *parser) parse() error {
	var first string
	for {
		l, ok, err := p.next()
		if err != nil {
			return err
		}
		if !ok {
			if p.line == 0 {
				return fmt.Errorf("line 1: %w: empty", ErrFormat)
			}
			return fmt.Errorf("line %d: %w", p.line, ErrTruncated)
		}
		if strings.TrimSpace(l) != "" {
			first = l
			break
		}
	}
	switch {
	case first == "OpenVPN CLIENT LIST":
		return p.parseV1()
	case strings.HasPrefix(first, "TITLE,"), strings.HasPrefix(first, "TIME,"), strings.HasPrefix(first, "HEADER,"):
		return p.parseV2(first, ",")
	case strings.HasPrefix(first, "TITLE\t"), strings.HasPrefix(first, "TIME\t"), strings.HasPrefix(first, "HEADER\t"):
		return p.parseV2(first, "\t")
	}
	return p.errorf("unknown first line %q", clip(first))
}

// header is the column indexes of a table.
type header map[string]int

func newHeader(names []string) header {
	h := make(header, len(names))
	for i, n := range names {
		if _, dup := h[n]; !dup {
			h[n] = i
		}
	}
	return h
}

// get returns the value of column name in row, and whether the table has
// that column.
func (h header) get(row []string, name string) (string, bool) {
	i, ok := h[name]
	if !ok {
		return "", false
	}
	return row[i], true
}

// table is a parsed header with its column count.
type table struct {
	h    header
	cols int
}

func (p *parser) clientHeader(names []string) (*table, error) {
	t := &table{h: newHeader(names), cols: len(names)}
	for _, c := range []string{colCommonName, colRealAddr} {
		if _, ok := t.h[c]; !ok {
			return nil, p.errorf("client list header lacks column %q", c)
		}
	}
	_, since := t.h[colSince]
	_, sinceUnix := t.h[colSinceUnix]
	if !since && !sinceUnix {
		return nil, p.errorf("client list header lacks column %q", colSince)
	}
	return t, nil
}

func (p *parser) routeHeader(names []string) (*table, error) {
	t := &table{h: newHeader(names), cols: len(names)}
	for _, c := range []string{colVirtualAddr, colCommonName, colRealAddr} {
		if _, ok := t.h[c]; !ok {
			return nil, p.errorf("routing table header lacks column %q", c)
		}
	}
	return t, nil
}

func (p *parser) checkCols(t *table, row []string, what string) error {
	if len(row) != t.cols {
		return p.errorf("%s has %d fields, its header %d", what, len(row), t.cols)
	}
	return nil
}

// parseV2 parses versions 2 and 3, whose fields are separated by sep.
func (p *parser) parseV2(l, sep string) error {
	var clients, routes *table
	for {
		f := strings.Split(l, sep)
		switch f[0] {
		case "TITLE":
			p.st.Title = strings.Join(f[1:], sep)
		case "TIME":
			if len(f) < 2 {
				return p.errorf("TIME without a time")
			}
			var unix string
			if len(f) > 2 {
				unix = f[2]
			}
			t, err := p.time(f[1], unix, "TIME")
			if err != nil {
				return err
			}
			p.st.Updated = t
		case "HEADER":
			if len(f) < 2 {
				return p.errorf("HEADER without a table name")
			}
			var err error
			switch f[1] {
			case "CLIENT_LIST":
				clients, err = p.clientHeader(f[2:])
			case "ROUTING_TABLE":
				routes, err = p.routeHeader(f[2:])
			}
			if err != nil {
				return err
			}
		case "CLIENT_LIST":
			if clients == nil {
				return p.errorf("CLIENT_LIST before its HEADER")
			}
			if err := p.checkCols(clients, f[1:], "CLIENT_LIST"); err != nil {
				return err
			}
			c, err := p.client(clients.h, f[1:])
			if err != nil {
				return err
			}
			p.st.Clients = append(p.st.Clients, c)
		case "ROUTING_TABLE":
			if routes == nil {
				return p.errorf("ROUTING_TABLE before its HEADER")
			}
			if err := p.checkCols(routes, f[1:], "ROUTING_TABLE"); err != nil {
				return err
			}
			r, err := p.route(routes.h, f[1:])
			if err != nil {
				return err
			}
			p.st.Routes = append(p.st.Routes, r)
		case "END":
			return nil
		case "", "GLOBAL_STATS":
		default:
			// Other records (ERRORS in debugging builds, tables of later
			// versions) are skipped; so is text that is not a record
			// at all, unless it breaks a table.
		}
		var ok bool
		var err error
		l, ok, err = p.next()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("line %d: %w", p.line, ErrTruncated)
		}
	}
}

// Sections of version 1.
const (
	v1Clients = "OpenVPN CLIENT LIST"
	v1Routes  = "ROUTING TABLE"
	v1Stats   = "GLOBAL STATS"
)

// parseV1 parses version 1 after its first line.
func (p *parser) parseV1() error {
	section := v1Clients
	var clients, routes *table
	for {
		l, ok, err := p.next()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("line %d: %w", p.line, ErrTruncated)
		}
		switch {
		case l == "END":
			p.fillVirtualV1()
			return nil
		case l == v1Routes || l == v1Stats:
			section = l
			continue
		case section == v1Clients && strings.HasPrefix(l, "Updated,"):
			t, err := p.time(strings.TrimPrefix(l, "Updated,"), "", "Updated")
			if err != nil {
				return err
			}
			p.st.Updated = t
			continue
		case section == v1Stats || l == "":
			continue
		}
		f := strings.Split(l, ",")
		switch {
		case section == v1Clients && clients == nil:
			if clients, err = p.clientHeader(f); err != nil {
				return err
			}
		case section == v1Clients:
			if err := p.checkCols(clients, f, "client"); err != nil {
				return err
			}
			c, err := p.client(clients.h, f)
			if err != nil {
				return err
			}
			p.st.Clients = append(p.st.Clients, c)
		case routes == nil:
			if routes, err = p.routeHeader(f); err != nil {
				return err
			}
		default:
			if err := p.checkCols(routes, f, "route"); err != nil {
				return err
			}
			r, err := p.route(routes.h, f)
			if err != nil {
				return err
			}
			p.st.Routes = append(p.st.Routes, r)
		}
	}
}

// fillVirtualV1 gives version 1's clients the virtual addresses of their
// host routes.
func (p *parser) fillVirtualV1() {
	for i := range p.st.Clients {
		c := &p.st.Clients[i]
		for _, r := range p.st.Routes {
			if r.CommonName != c.CommonName || r.RealAddr != c.RealAddr {
				continue
			}
			a, err := netip.ParseAddr(r.VirtualAddr)
			if err != nil {
				continue // a network (iroute), a cached route, a MAC (tap)
			}
			if a.Is4() && c.VirtualAddr == "" {
				c.VirtualAddr = r.VirtualAddr
			}
			if a.Is6() && c.VirtualIPv6 == "" {
				c.VirtualIPv6 = r.VirtualAddr
			}
		}
	}
}

func (p *parser) client(h header, row []string) (Client, error) {
	c := Client{ClientID: -1, PeerID: -1}
	c.CommonName, _ = h.get(row, colCommonName)
	c.RealAddr, _ = h.get(row, colRealAddr)
	c.VirtualAddr, _ = h.get(row, colVirtualAddr)
	c.VirtualIPv6, _ = h.get(row, colVirtualIPv6)
	c.Cipher, _ = h.get(row, colCipher)
	if u, _ := h.get(row, colUsername); u != UndefName {
		c.Username = u
	}
	var err error
	for _, u := range []struct {
		col string
		dst *uint64
	}{{colBytesIn, &c.BytesIn}, {colBytesOut, &c.BytesOut}} {
		v, ok := h.get(row, u.col)
		if !ok || v == "" {
			continue
		}
		if *u.dst, err = strconv.ParseUint(v, 10, 64); err != nil {
			return c, p.errorf("%s %q is not a count", u.col, clip(v))
		}
	}
	for _, id := range []struct {
		col string
		dst *int64
	}{{colClientID, &c.ClientID}, {colPeerID, &c.PeerID}} {
		v, ok := h.get(row, id.col)
		if !ok || v == "" {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > math.MaxInt64 {
			return c, p.errorf("%s %q is not an id", id.col, clip(v))
		}
		if n != math.MaxUint32 { // OpenVPN's "no peer id"
			*id.dst = int64(n)
		}
	}
	since, _ := h.get(row, colSince)
	sinceUnix, _ := h.get(row, colSinceUnix)
	if c.ConnectedSince, err = p.time(since, sinceUnix, colSince); err != nil {
		return c, err
	}
	return c, nil
}

func (p *parser) route(h header, row []string) (Route, error) {
	var r Route
	r.VirtualAddr, _ = h.get(row, colVirtualAddr)
	r.CommonName, _ = h.get(row, colCommonName)
	r.RealAddr, _ = h.get(row, colRealAddr)
	ref, _ := h.get(row, colLastRef)
	refUnix, _ := h.get(row, colLastRefUnix)
	if ref == "" && refUnix == "" {
		return r, nil
	}
	var err error
	r.LastRef, err = p.time(ref, refUnix, colLastRef)
	return r, err
}

// time reads a time from its time_t column when there is one, else from
// its local-time text.
func (p *parser) time(text, unix, what string) (time.Time, error) {
	if unix != "" {
		n, err := strconv.ParseInt(unix, 10, 64)
		if err != nil {
			return time.Time{}, p.errorf("%s time_t %q is not a number", what, clip(unix))
		}
		return time.Unix(n, 0), nil
	}
	text = strings.TrimSpace(text)
	for _, layout := range timeLayouts {
		if t, err := time.ParseInLocation(layout, text, p.loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, p.errorf("%s %q is not a time", what, clip(text))
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
