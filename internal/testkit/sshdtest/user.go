package sshdtest

import (
	"bufio"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// ensureUser makes sure the login user exists, creating it with useradd
// (as root) when missing, and that nothing in its passwd and shadow
// entries stops a public-key login through PAM.
func ensureUser(t testing.TB, name string) {
	t.Helper()
	if _, err := user.Lookup(name); err != nil {
		RequireRoot(t)
		createUser(t, name)
	}
	if reason := loginBlocker(name, "/etc/passwd", "/etc/shadow", time.Now()); reason != "" {
		Require(t, fmt.Sprintf("test user %s able to log in with a key under UsePAM (%s)", name, reason), false)
	}
}

// createUser creates the login user with useradd (as root).
func createUser(t testing.TB, name string) {
	t.Helper()
	testproc.EnsureUser(t, "sshdtest", name)
}

// loginBlocker returns why the passwd/shadow entries of name would stop a
// non-interactive public-key login under UsePAM yes (pam_unix account
// checks), or "" when nothing does. A locked password ("!" or "*") is
// fine: with UsePAM yes sshd leaves the lock check to PAM, and pam_unix's
// account stage does not look at the password field.
func loginBlocker(name, passwdFile, shadowFile string, now time.Time) string {
	if pw := field(passwdFile, name); len(pw) >= 7 {
		shell := pw[6]
		if shell == "" {
			shell = "/bin/sh"
		}
		if fi, err := os.Stat(shell); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Sprintf("login shell %s is not executable", shell)
		}
	}
	sp := field(shadowFile, name)
	if len(sp) < 8 {
		return "" // not a local shadow user: nothing to check
	}
	today := now.Unix() / 86400
	num := func(s string) (int64, bool) {
		v, err := strconv.ParseInt(s, 10, 64)
		return v, err == nil
	}
	lastchg, hasLast := num(sp[2])
	maxDays, hasMax := num(sp[4])
	inact, hasInact := num(sp[6])
	if exp, ok := num(sp[7]); ok && exp > 0 && today >= exp {
		return fmt.Sprintf("account expired on day %d; fix: chage -E -1 %s", exp, name)
	}
	if hasLast && lastchg == 0 {
		return fmt.Sprintf("password change forced (last change 0), PAM refuses logins without a tty; fix: chage -d %s %s", now.UTC().Format("2006-01-02"), name)
	}
	if hasLast && hasMax && maxDays >= 0 && today-lastchg > maxDays {
		if hasInact && inact >= 0 && today-lastchg > maxDays+inact {
			return fmt.Sprintf("password inactive too long; fix: chage -M -1 %s", name)
		}
		return fmt.Sprintf("password expired, PAM demands a change; fix: chage -M -1 %s", name)
	}
	return ""
}

// field returns the colon-separated fields of name's line in a
// passwd-style file, or nil.
func field(path, name string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Split(sc.Text(), ":")
		if fl[0] == name {
			return fl
		}
	}
	return nil
}
