package tracker

import (
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/session"
)

func sshSession(id, user, addr string, port int, start time.Duration) session.Session {
	return session.Session{ID: id, Kind: session.KindSSH, User: user, RemoteAddr: addr, RemotePort: port, StartedAt: t0.Add(start)}
}

func TestLogin(t *testing.T) {
	tests := []struct {
		name string
		// run drives the tracker and returns the events of interest.
		run  func(tr *Tracker) string
		want string
	}{
		{
			name: "a login no scan saw: start and end at the log's times, transient after the next Apply",
			run: func(tr *Tracker) string {
				tr.Apply(snap(0))
				out := summary(tr.Login(Login{Time: t0.Add(100 * time.Millisecond), User: "bob", Addr: "198.51.100.7", Port: 40000}))
				evs := tr.Login(Login{Time: t0.Add(200 * time.Millisecond), User: "bob", Addr: "198.51.100.7", Port: 40000, End: true})
				if len(evs) != 2 || !evs[0].Time.Equal(t0.Add(100*time.Millisecond)) || !evs[1].Time.Equal(t0.Add(200*time.Millisecond)) || !strings.Contains(evs[0].Reason, "sshd's log") {
					return "bad events: " + summary(evs)
				}
				if len(tr.Transient()) != 0 {
					return "transient before Apply"
				}
				tr.Apply(snap(time.Second))
				if tr := tr.Transient(); len(tr) != 1 || tr[0].User != "bob" {
					return "not transient after Apply"
				}
				tr.Apply(snap(2 * time.Second))
				if len(tr.Transient()) != 0 {
					return "still transient two Applies later"
				}
				return out + summary(evs)
			},
			want: "session_start:ssh-log-198.51.100.7-40000-",
		},
		{
			name: "a session the scans saw: its log end adds nothing",
			run: func(tr *Tracker) string {
				tr.Login(Login{Time: t0, User: "carol", Addr: "198.51.100.8", Port: 40001})
				s := snap(time.Second)
				s.Sessions = []session.Session{sshSession("ssh-9-9", "carol", "198.51.100.8", 40001, 0)}
				out := summary(tr.Apply(s))
				out += summary(tr.Apply(snap(2 * time.Second)))
				return out + summary(tr.Login(Login{Time: t0.Add(2 * time.Second), User: "carol", Addr: "198.51.100.8", Port: 40001, End: true}))
			},
			want: "session_start:ssh-9-9 session_end:ssh-9-9 ",
		},
		{
			name: "the scans saw it begin and end before its login line (IPv4-mapped in the log)",
			run: func(tr *Tracker) string {
				s := snap(time.Second)
				s.Sessions = []session.Session{sshSession("ssh-5-5", "dave", "192.0.2.7", 41000, 0)}
				out := summary(tr.Apply(s))
				out += summary(tr.Apply(snap(2 * time.Second)))
				out += summary(tr.Login(Login{Time: t0, User: "dave", Addr: "::ffff:192.0.2.7", Port: 41000}))
				return out + summary(tr.Login(Login{Time: t0.Add(time.Second), User: "dave", Addr: "::ffff:192.0.2.7", Port: 41000, End: true}))
			},
			want: "session_start:ssh-5-5 session_end:ssh-5-5 ",
		},
		{
			name: "without root the scan has no address: matched by user within LoginGrace",
			run: func(tr *Tracker) string {
				tr.Login(Login{Time: t0, User: "erin", Addr: "203.0.113.1", Port: 50000})
				s := snap(time.Second)
				s.Sessions = []session.Session{sshSession("ssh-7-7", "erin", "", 0, LoginGrace-time.Millisecond)}
				out := summary(tr.Apply(s))
				return out + summary(tr.Login(Login{Time: t0.Add(3 * time.Second), User: "erin", Addr: "203.0.113.1", Port: 50000, End: true}))
			},
			want: "session_start:ssh-7-7 ",
		},
		{
			name: "another user without an address is not a match",
			run: func(tr *Tracker) string {
				tr.Login(Login{Time: t0, User: "erin", Addr: "203.0.113.1", Port: 50000})
				s := snap(time.Second)
				s.Sessions = []session.Session{sshSession("ssh-7-7", "frank", "", 0, 0)}
				tr.Apply(s)
				return summary(tr.Login(Login{Time: t0.Add(3 * time.Second), User: "erin", Addr: "203.0.113.1", Port: 50000, End: true}))
			},
			want: "session_start:ssh-log-203.0.113.1-50000-",
		},
		{
			name: "an end without a login adds nothing; a login older than an hour is forgotten",
			run: func(tr *Tracker) string {
				out := summary(tr.Login(Login{Time: t0, User: "gina", Addr: "203.0.113.2", Port: 1, End: true}))
				tr.Login(Login{Time: t0, User: "gina", Addr: "203.0.113.2", Port: 2})
				tr.Apply(snap(loginMemory + time.Second))
				return out + summary(tr.Login(Login{Time: t0.Add(loginMemory + 2*time.Second), User: "gina", Addr: "203.0.113.2", Port: 2, End: true}))
			},
			want: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.run(New()); !strings.HasPrefix(got, tt.want) || (tt.want == "" && got != "") || (strings.HasSuffix(tt.want, " ") && got != tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
