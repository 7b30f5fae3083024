package hold

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

// IMDSTag against the loopback metadata service, through the real SDK.
func TestIMDSTag(t *testing.T) {
	s := awstest.New(t)
	s.Env(t)
	timeout := 5 * time.Second
	read := func() (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		return (&IMDSTag{Key: StartHoldTag}).ReadTag(ctx)
	}

	// Tags off, as on a new instance: 404 for the tag and for the list.
	s.SetInstanceTag(StartHoldTag, "2026-12-05T22:10:00Z", false)
	_, err := read()
	if !errors.Is(err, ErrTagsDisabled) || errors.Is(err, ErrTagAbsent) ||
		!strings.Contains(err.Error(), "aws ec2 modify-instance-metadata-options --instance-id "+s.InstanceID+" --instance-metadata-tags enabled") {
		t.Errorf("tags off: %v", err)
	}

	s.SetInstanceMetadataTags(true)
	if v, err := read(); err != nil || v != "2026-12-05T22:10:00Z" {
		t.Errorf("tag set: %q, %v", v, err)
	}
	s.SetInstanceTag(StartHoldTag, "", true)
	s.SetInstanceTag("Name", "devbox", false)
	if _, err := read(); !errors.Is(err, ErrTagAbsent) || errors.Is(err, ErrTagsDisabled) {
		t.Errorf("no such tag: %v", err)
	}
	// A long value is read only as far as it takes to refuse it.
	s.SetInstanceTag(StartHoldTag, strings.Repeat("9", 4096), false)
	if v, err := read(); err != nil || len(v) != MaxStartHoldValue+1 {
		t.Errorf("long value: %d bytes, %v", len(v), err)
	}
	if _, err := ParseHoldUntil(strings.Repeat("9", MaxStartHoldValue+1)); !errors.Is(err, ErrStartHoldValue) {
		t.Errorf("the cut value is not refused: %v", err)
	}
	for _, r := range s.Requests() {
		if r.Protocol != awstest.ProtocolIMDS {
			t.Errorf("not a metadata request: %s %s", r.Method, r.Path)
		}
	}

	// No metadata service (a closed loopback port): a failure, neither
	// answer. (The SDK retries for seconds: the caller's deadline ends it.)
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1")
	timeout = 300 * time.Millisecond
	if _, err := read(); err == nil || errors.Is(err, ErrTagAbsent) || errors.Is(err, ErrTagsDisabled) {
		t.Errorf("no metadata service: %v", err)
	}
}
