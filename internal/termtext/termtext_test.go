package termtext_test

import (
	"testing"

	"github.com/connwatch/connwatch/internal/termtext"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "alice", "alice"},
		{"empty", "", ""},
		{"spaces and punctuation", `alice@pts/0 "x" \n`, `alice@pts/0 "x" \n`},
		{"letters of other scripts", "jürgen 山田 Ωμέγα", "jürgen 山田 Ωμέγα"},
		{"ESC c resets the terminal", "\x1bc", `\x1bc`},
		{"CSI clears the screen", "\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},
		{"OSC sets the title, BEL ends it", "\x1b]0;pwned\a", `\x1b]0;pwned\a`},
		{"carriage return rewrites the line", "bob\rroot", `bob\rroot`},
		{"newline adds a row", "bob\nroot  1.2.3.4", `bob\nroot  1.2.3.4`},
		{"tab shifts columns", "a\tb", `a\tb`},
		{"NUL", "a\x00b", `a\x00b`},
		{"DEL", "a\x7f", `a\x7f`},
		{"C1 CSI", "a\u009b2J", `a\u009b2J`},
		{"C1 NEL", "a\u0085b", `a\u0085b`},
		{"right-to-left override", "evil\u202etxt.exe", `evil\u202etxt.exe`},
		{"left-to-right isolate", "\u2066x\u2069", `\u2066x\u2069`},
		{"zero-width space", "ad\u200bmin", `ad\u200bmin`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"byte order mark", "\ufeffroot", `\ufeffroot`},
		{"tag character", "a\U000e0041", `a\U000e0041`},
		{"invalid UTF-8", "a\xffb\xc3", `a\xffb\xc3`},
		{"overlong encoding of ESC", "\xc0\x9b", `\xc0\x9b`},
		{"raw C1 byte", "\x9b2J", `\x9b2J`},
		{"replacement character itself", "a\ufffdb", "a\ufffdb"},
	} {
		if got := termtext.Escape(tc.in); got != tc.want {
			t.Errorf("%s: Escape(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestEscapePlainDoesNotAllocate(t *testing.T) {
	s := "alice  198.51.100.7:50122  tty pts/0"
	if n := testing.AllocsPerRun(100, func() { _ = termtext.Escape(s) }); n != 0 {
		t.Errorf("Escape of printable ASCII allocates %v times", n)
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"alice", "\x1bc", "a\u202eb", "\xff\xfe", "山田\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := termtext.Escape(s)
		for i := 0; i < len(out); i++ {
			if c := out[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("Escape(%q) = %q keeps control byte %#x", s, out, c)
			}
		}
		for _, r := range out {
			if r == '\ufffd' && !containsRune(s, '\ufffd') {
				t.Fatalf("Escape(%q) = %q is not valid UTF-8", s, out)
			}
			if r >= 0x80 && r <= 0x9f || r == 0x202e || r == 0x200b {
				t.Fatalf("Escape(%q) = %q keeps %U", s, out, r)
			}
		}
	})
}

func containsRune(s string, r rune) bool {
	for _, c := range s {
		if c == r {
			return true
		}
	}
	return false
}

func BenchmarkEscape(b *testing.B) {
	for _, in := range []struct{ name, s string }{
		{"ascii", "alice  198.51.100.7:50122  tty pts/0"},
		{"hostile", "\x1bc<!channel>\u202e\r\nroot"},
	} {
		b.Run(in.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = termtext.Escape(in.s)
			}
		})
	}
}
