package tunnel

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/connwatch/connwatch/internal/atomicfile"
)

// ErrKeyExists refuses to overwrite a key.
var ErrKeyExists = errors.New("key exists")

// GenerateKey writes a new ed25519 key without passphrase to path (mode
// 0600) and its public half to path.pub (0644), each atomically, and
// returns the public key. It refuses with ErrKeyExists when either file
// exists, unless force.
func GenerateKey(path, comment string, force bool) (ssh.PublicKey, error) {
	if !force {
		for _, p := range []string{path, path + ".pub"} {
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("generate key %s: %w", p, ErrKeyExists)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("generate key %s: %w", p, err)
			}
		}
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	pub := signer.PublicKey()
	if err := atomicfile.Write(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	if err := atomicfile.Write(path+".pub", []byte(line+"\n"), 0o644); err != nil {
		return nil, err
	}
	return pub, nil
}

// Restriction is what the server should allow a tunnel key.
type Restriction struct {
	From       string   // from="…": a CIDR or address; "" for anywhere
	PermitOpen []string // extra host:port destinations for permitopen
}

// AuthorizedKeysLine returns the authorized_keys line for the server of
// spec that lets pub do no more than spec's forwards need: restrict and
// port-forwarding; permitopen="host:port" for each LocalForward
// destination and each extra; permitlisten="[host:]port" for each
// RemoteForward; from="…" if set. A DynamicForward may open anything,
// so without extras it leaves out permitopen entirely (any
// destination); with no LocalForward and no extra, permitopen is left
// out too and local forwarding is not limited. Values are checked: no
// quotes, and from must be an address or prefix.
func AuthorizedKeysLine(spec Spec, pub ssh.PublicKey, r Restriction, comment string) (string, error) {
	opts, err := AuthorizedKeyOptions(spec, r)
	if err != nil {
		return "", err
	}
	line := opts + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	return line, nil
}

// AuthorizedKeyOptions returns the options part of AuthorizedKeysLine.
func AuthorizedKeyOptions(spec Spec, r Restriction) (string, error) {
	opts := []string{"restrict", "port-forwarding"}
	var open []string
	seen := map[string]bool{}
	add := func(list *[]string, v string) {
		if !seen[v] {
			seen[v] = true
			*list = append(*list, v)
		}
	}
	dynamic := false
	for _, f := range spec.Forwards {
		switch f.Kind {
		case Local:
			add(&open, f.DestAddr())
		case Dynamic:
			dynamic = true
		}
	}
	if dynamic {
		open = nil
	}
	for _, o := range r.PermitOpen {
		if strings.ContainsAny(o, "\"\\ ") {
			return "", fmt.Errorf("permitopen %q: %w", o, ErrSpec)
		}
		if _, _, err := splitHostPort(o, false); err != nil && !strings.HasSuffix(o, ":*") {
			return "", fmt.Errorf("permitopen %q: %w", o, err)
		}
		add(&open, o)
	}
	for _, o := range open {
		opts = append(opts, `permitopen="`+o+`"`)
	}
	for _, f := range spec.Forwards {
		if f.Kind != Remote {
			continue
		}
		l := strconv.Itoa(f.BindPort)
		switch f.BindHost {
		case "", "localhost":
		default:
			l = net.JoinHostPort(f.BindHost, l)
		}
		if !seen["listen "+l] {
			seen["listen "+l] = true
			opts = append(opts, `permitlisten="`+l+`"`)
		}
	}
	if r.From != "" {
		if _, err := netip.ParsePrefix(r.From); err != nil {
			if _, err := netip.ParseAddr(r.From); err != nil {
				return "", fmt.Errorf("from %q: want an address or CIDR prefix: %w", r.From, ErrSpec)
			}
		}
		opts = append(opts, `from="`+r.From+`"`)
	}
	return strings.Join(opts, ","), nil
}
