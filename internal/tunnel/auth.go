package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// ErrHostKey is wrapped by host key verification failures.
var ErrHostKey = errors.New("host key verification failed")

// expandHome expands a leading "~/" as ssh does.
func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}

// signers returns the keys to offer, like ssh: each identity file that
// exists (a passphrase-protected one only through the agent holding it),
// then, unless IdentitiesOnly, the agent's other keys. The returned
// closer ends the agent connection; call it after the handshake.
func (sp Spec) signers(agentSock string) ([]ssh.Signer, func(), error) {
	var agentSigners []ssh.Signer
	closeAgent := func() {}
	if agentSock != "" {
		if c, err := net.Dial("unix", agentSock); err == nil {
			closeAgent = func() { c.Close() }
			agentSigners, _ = agent.NewClient(c).Signers()
		}
	}
	fromAgent := func(pub ssh.PublicKey) ssh.Signer {
		for _, s := range agentSigners {
			if bytes.Equal(s.PublicKey().Marshal(), pub.Marshal()) {
				return s
			}
		}
		return nil
	}
	var out []ssh.Signer
	used := map[string]bool{}
	var errs []error
	for _, f := range sp.IdentityFiles {
		path := expandHome(f)
		pem, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read identity %s: %w", path, err))
			continue
		}
		s, err := ssh.ParsePrivateKey(pem)
		var pm *ssh.PassphraseMissingError
		switch {
		case errors.As(err, &pm):
			pub := pm.PublicKey
			if pub == nil {
				if b, err := os.ReadFile(path + ".pub"); err == nil {
					pub, _, _, _, _ = ssh.ParseAuthorizedKey(b)
				}
			}
			if pub == nil || fromAgent(pub) == nil {
				errs = append(errs, fmt.Errorf("use identity %s: passphrase-protected and not in ssh-agent", path))
				continue
			}
			s = fromAgent(pub)
		case err != nil:
			errs = append(errs, fmt.Errorf("parse identity %s: %w", path, err))
			continue
		}
		out = append(out, s)
		used[string(s.PublicKey().Marshal())] = true
	}
	if !sp.IdentitiesOnly {
		for _, s := range agentSigners {
			if !used[string(s.PublicKey().Marshal())] {
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		errs = append(errs, errors.New("no usable identity"))
		closeAgent()
		return nil, func() {}, fmt.Errorf("load keys: %w", errors.Join(errs...))
	}
	return out, closeAgent, nil
}

// hostKeys checks host keys against known_hosts files (hashed names,
// @cert-authority and @revoked included) under a StrictHostKeyChecking
// policy. accept-new appends unknown hosts' keys to the first user file.
type hostKeys struct {
	policy HostKeyPolicy
	files  []string // existing or not; read on every check
	mu     sync.Mutex
}

func newHostKeys(sp Spec) *hostKeys {
	var files []string
	for _, f := range append(append([]string(nil), sp.UserKnownHostsFiles...), sp.GlobalKnownHostsFiles...) {
		files = append(files, expandHome(f))
	}
	return &hostKeys{policy: sp.StrictHostKeyChecking, files: files}
}

func (h *hostKeys) callback() (ssh.HostKeyCallback, error) {
	var existing []string
	for _, f := range h.files {
		if _, err := os.Stat(f); err == nil {
			existing = append(existing, f)
		}
	}
	if len(existing) == 0 {
		return func(string, net.Addr, ssh.PublicKey) error {
			return &knownhosts.KeyError{}
		}, nil
	}
	cb, err := knownhosts.New(existing...)
	if err != nil {
		return nil, fmt.Errorf("read known hosts: %w", err)
	}
	return cb, nil
}

// check is the ssh.HostKeyCallback. As in OpenSSH, a key listed as
// @revoked (or a certificate whose key or CA is) is refused whatever the
// policy, even StrictHostKeyChecking no; a certificate signed by a CA
// that no @cert-authority line trusts for the host is checked as its
// plain key; one from a trusted CA must be valid (principal, dates).
func (h *hostKeys) check(hostname string, remote net.Addr, key ssh.PublicKey) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	cb, err := h.callback()
	if err != nil {
		if h.policy == HostKeyOff {
			return nil
		}
		return err
	}
	revoked := func(k ssh.PublicKey) error {
		var re *knownhosts.RevokedError
		if errors.As(cb(hostname, remote, k), &re) {
			return fmt.Errorf("check host key of %s: %s key %s is revoked (%s:%d): %w",
				hostname, k.Type(), ssh.FingerprintSHA256(k), re.Revoked.Filename, re.Revoked.Line, ErrHostKey)
		}
		return nil
	}
	cert, isCert := key.(*ssh.Certificate)
	if isCert {
		if err := revoked(cert.Key); err != nil {
			return err
		}
		if err := revoked(cert.SignatureKey); err != nil {
			return err
		}
	} else if err := revoked(key); err != nil {
		return err
	}
	if h.policy == HostKeyOff {
		return nil
	}
	err = cb(hostname, remote, key)
	var ke *knownhosts.KeyError
	if isCert && err != nil && strings.Contains(err.Error(), noAuthorities) {
		// No matching CA: retry with the plain key, as ssh does.
		key = cert.Key
		err = cb(hostname, remote, key)
	}
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ke) && len(ke.Want) == 0 && h.policy == HostKeyAcceptNew:
		if len(h.files) == 0 {
			return fmt.Errorf("accept new host key for %s: no known hosts file: %w", hostname, ErrHostKey)
		}
		return appendLine(h.files[0], knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key))
	case errors.As(err, &ke) && len(ke.Want) == 0:
		return fmt.Errorf("no %s host key known for %s: %w", key.Type(), hostname, ErrHostKey)
	default:
		return fmt.Errorf("check host key of %s: %w", hostname, errors.Join(ErrHostKey, err))
	}
}

// algorithms returns the host key algorithms to ask for: those of the
// keys known_hosts holds for hostname first (so the server shows a key we
// can check), then the rest of preferred.
func (h *hostKeys) algorithms(hostname string, remote net.Addr, preferred []string) []string {
	h.mu.Lock()
	cb, err := h.callback()
	h.mu.Unlock()
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if !errors.As(cb(hostname, remote, probeKey{}), &ke) || len(ke.Want) == 0 {
		return nil
	}
	supported := map[string]bool{}
	for _, a := range ssh.SupportedAlgorithms().HostKeys {
		supported[a] = true
	}
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		if supported[a] && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	// @cert-authority lines come back in Want too: for them, ask for
	// certificates (of any key type: a CA may sign any kind of host key).
	var plain []knownhosts.KnownKey
	ca := false
	for _, k := range ke.Want {
		if isAuthority(cb, hostname, remote, k.Key) {
			ca = true
		} else {
			plain = append(plain, k)
		}
	}
	if ca {
		for _, a := range preferred {
			if strings.HasSuffix(a, certAlgoSuffix) {
				add(a)
			}
		}
		for _, a := range ssh.SupportedAlgorithms().HostKeys {
			if strings.HasSuffix(a, certAlgoSuffix) {
				add(a)
			}
		}
	}
	for _, k := range plain {
		if t := k.Key.Type(); t == ssh.KeyAlgoRSA {
			add(ssh.KeyAlgoRSASHA512)
			add(ssh.KeyAlgoRSASHA256)
			add(t)
		} else {
			add(t)
		}
	}
	if len(preferred) == 0 { // the rest of the defaults, not nothing
		preferred = ssh.SupportedAlgorithms().HostKeys
	}
	for _, a := range preferred {
		add(a)
	}
	return out
}

const certAlgoSuffix = "-cert-v01@openssh.com"

// isAuthority reports whether known_hosts trusts key as a
// @cert-authority for hostname: a certificate it "signed" gets past the
// authority check (and then fails on its signature) instead of being
// refused for want of an authority.
func isAuthority(cb ssh.HostKeyCallback, hostname string, remote net.Addr, key ssh.PublicKey) bool {
	cert := &ssh.Certificate{Key: probeKey{}, SignatureKey: key, CertType: ssh.HostCert}
	err := cb(hostname, remote, cert)
	return err != nil && !strings.Contains(err.Error(), noAuthorities)
}

// noAuthorities is in the error of ssh.CertChecker for a certificate
// whose CA no @cert-authority line trusts for the host.
const noAuthorities = "no authorities for hostname"

// probeKey is a key no known_hosts line matches: checking it returns the
// KeyError listing the keys known for a host.
type probeKey struct{}

func (probeKey) Type() string                        { return "connwatch-probe" }
func (probeKey) Marshal() []byte                     { return []byte("connwatch-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key") }

// appendLine appends line to a known_hosts file atomically: the new
// content is written to a temporary file in the same directory and
// renamed over the old one.
func appendLine(path, line string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if len(old) > 0 && !bytes.HasSuffix(old, []byte("\n")) {
		old = append(old, '\n')
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".known_hosts.*")
	if err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(old, line+"\n"...))
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	return nil
}
