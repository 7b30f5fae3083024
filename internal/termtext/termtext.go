// Package termtext makes strings that others control safe to print on a
// terminal. User names, process titles, VPN common names and usernames,
// host names from logs, inhibit reasons: a root process that prints them
// as they are lets their author move the cursor, clear the screen
// (ESC c), rewrite earlier lines (CR), reverse the text that follows
// (U+202E) or add table rows (newline). Escape shows such characters as
// Go escapes instead, the way strconv.QuoteToGraphic does, and leaves
// everything else, backslashes included, as it is.
//
// Output meant for programs (JSON) is never escaped: it stays exact.
package termtext

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with every character that is not graphic replaced by
// a visible escape: C0 and C1 control characters and DEL ("\x1b", "\n",
// "\x7f", "\u0085"), format characters such as bidirectional overrides
// and zero-width spaces ("\u202e", "\u200b"), line and paragraph
// separators, private-use and unassigned code points, and bytes that are
// not valid UTF-8 ("\xff"). Graphic characters, including spaces and
// letters of every script, are kept. A string of printable ASCII is
// returned as it is, without allocating.
func Escape(s string) string {
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			b.WriteString(`\x`)
			b.WriteByte(hex[s[i]>>4])
			b.WriteByte(hex[s[i]&0xf])
		case unicode.IsGraphic(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRuneToASCII(r) // e.g. '\x1b', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

const hex = "0123456789abcdef"
