package connect

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrBadTarget marks an INSTANCE, PORT or --address that cannot be
// right; nothing was asked of AWS.
var ErrBadTarget = errors.New("bad target")

// NamePrefix introduces a target given by its Name tag.
const NamePrefix = "name:"

// maxTagValue is EC2's limit on a tag value, in characters.
const maxTagValue = 256

// Target is the instance to connect to: an instance id, or the value of
// a Name tag that exactly one instance that is not terminated has.
type Target struct {
	ID   string // i-0123456789abcdef0
	Name string // the Name tag's value, when ID is empty
}

// ParseTarget reads an instance id (i- and 8 or 17 hex digits) or
// name:TAG.
func ParseTarget(s string) (Target, error) {
	if name, ok := strings.CutPrefix(s, NamePrefix); ok {
		if err := checkName(name); err != nil {
			return Target{}, fmt.Errorf("instance %q: %w", s, err)
		}
		return Target{Name: name}, nil
	}
	if !isInstanceID(s) {
		return Target{}, fmt.Errorf("instance %q: want an instance id (i- and 8 or 17 hex digits) or name:TAG: %w", s, ErrBadTarget)
	}
	return Target{ID: s}, nil
}

func (t Target) String() string {
	if t.ID != "" {
		return t.ID
	}
	return NamePrefix + t.Name
}

func isInstanceID(s string) bool {
	hex, ok := strings.CutPrefix(s, "i-")
	if !ok || (len(hex) != 8 && len(hex) != 17) {
		return false
	}
	for _, c := range hex {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty Name tag: %w", ErrBadTarget)
	case !utf8.ValidString(name):
		return fmt.Errorf("the Name tag is not UTF-8: %w", ErrBadTarget)
	case utf8.RuneCountInString(name) > maxTagValue:
		return fmt.Errorf("the Name tag is longer than %d characters: %w", maxTagValue, ErrBadTarget)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("control character %q in the Name tag: %w", r, ErrBadTarget)
		}
	}
	return nil
}

// ParsePort reads a TCP port, 1 to 65535.
func ParsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %q: want 1 to 65535: %w", s, ErrBadTarget)
	}
	return p, nil
}

// Address is which of the instance's addresses to connect to.
type Address string

// The kinds of address. AddressAuto is the public address when the
// instance has one, else the private one.
const (
	AddressAuto    Address = ""
	AddressPublic  Address = "public"
	AddressPrivate Address = "private"
	AddressIPv6    Address = "ipv6"
)

// Addresses are the values --address takes.
var Addresses = []string{string(AddressPublic), string(AddressPrivate), string(AddressIPv6)}

// ParseAddress reads public, private or ipv6; "" is AddressAuto.
func ParseAddress(s string) (Address, error) {
	switch a := Address(s); a {
	case AddressAuto, AddressPublic, AddressPrivate, AddressIPv6:
		return a, nil
	}
	return "", fmt.Errorf("address %q: want public, private or ipv6: %w", s, ErrBadTarget)
}
