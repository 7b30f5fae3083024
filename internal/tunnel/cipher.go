package tunnel

import (
	"runtime"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"
)

// ciphers is the cipher preference offered to servers: AES-GCM first
// where the CPU has AES and carry-less multiplication instructions (Go's
// AES-GCM is then several times faster than ChaCha20-Poly1305),
// ChaCha20-Poly1305 first otherwise, as OpenSSH reasons; the CTR modes
// last, for old servers.
var ciphers = cipherPreference(hasAESGCM())

func hasAESGCM() bool {
	switch runtime.GOARCH {
	case "amd64", "386":
		return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ
	case "arm64":
		return cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	case "s390x":
		return cpu.S390X.HasAESGCM
	case "ppc64le":
		return true // POWER8 and later
	}
	return false
}

func cipherPreference(aesGCM bool) []string {
	gcm := []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM}
	chacha := []string{ssh.CipherChaCha20Poly1305}
	first, then := chacha, gcm
	if aesGCM {
		first, then = gcm, chacha
	}
	out := append(append(first, then...), ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR)
	return out
}
