package promsink

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/version"
)

func TestHealthz(t *testing.T) {
	clk := clock.NewFake(t0)
	m := New(Options{Clock: clk, LoopInterval: 2 * time.Second})
	srv := httptest.NewServer(m.mux())
	defer srv.Close()
	check := func(wantCode int, wantBody string) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantCode || !strings.Contains(string(b), wantBody) {
			t.Errorf("/healthz at +%v: %d %q, want %d with %q", clk.Now().Sub(t0), resp.StatusCode, b, wantCode, wantBody)
		}
	}
	check(http.StatusServiceUnavailable, "unhealthy: the main loop has not run yet")
	m.ObserveLoop()
	check(http.StatusOK, "ok")
	clk.Advance(6 * time.Second) // three intervals: still fine
	check(http.StatusOK, "ok")
	clk.Advance(time.Millisecond)
	check(http.StatusServiceUnavailable, "the main loop last ran 6.001s ago, more than 3 loop intervals (6s)")
	m.ObserveLoop()
	check(http.StatusOK, "ok")
}

func TestBuildInfo(t *testing.T) {
	m := New(Options{Clock: clock.NewFake(t0), Build: &version.Info{Version: "1.2.3", Revision: "abc123", GoVersion: "go1.26.8"}})
	compare(t, m, `connwatch_build_info{goversion="go1.26.8",revision="abc123",version="1.2.3"} 1
`, "connwatch_build_info")
	// By default the running binary's own.
	m = New(Options{Clock: clock.NewFake(t0)})
	in := version.Get()
	compare(t, m, `connwatch_build_info{goversion="`+in.GoVersion+`",revision="`+in.Revision+`",version="`+in.Version+`"} 1
`, "connwatch_build_info")
}
