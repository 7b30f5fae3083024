package authlog

import "strings"

// sshdArgOptions are the sshd options that take an argument (getopt
// string of OpenSSH 9.2 to 10.x: "C:E:b:c:f:g:h:k:o:p:u:46DGQRTdeiqrtV").
const sshdArgOptions = "CEbcfghkopu"

// LogFileFromListener returns the -E argument of an sshd listener's
// process title, such as "sshd: /usr/sbin/sshd -D -f /etc/x -E
// /var/log/sshd.log [listener] 0 of 10-100 startups": the file sshd logs
// to instead of syslog. It reports false when the title is not a
// listener's or has no -E. Options are read the way sshd's getopt reads
// them ("-DE file", "-Efile"; the last -E wins; "--" ends options). A
// relative path is returned as is: it is relative to the listener's
// working directory (/proc/PID/cwd). A path with spaces cannot be told
// apart from the words around it in a title; only its first word is
// returned.
func LogFileFromListener(cmdlineTitle string) (string, bool) {
	_, rest, ok := strings.Cut(cmdlineTitle, ": ")
	if !ok {
		return "", false
	}
	args, _, ok := strings.Cut(rest, " [listener]")
	if !ok {
		return "", false
	}
	f := strings.Fields(args)
	if len(f) == 0 {
		return "", false
	}
	var file string
	found := false
	for i := 1; i < len(f); i++ { // f[0] is the program
		a := f[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			break
		}
		for j := 1; j < len(a); j++ {
			if !strings.ContainsRune(sshdArgOptions, rune(a[j])) {
				continue
			}
			val := a[j+1:]
			if val == "" {
				if i+1 >= len(f) {
					return file, found
				}
				i++
				val = f[i]
			}
			if a[j] == 'E' {
				file, found = val, true
			}
			break
		}
	}
	return file, found
}
