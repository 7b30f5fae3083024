package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/outbox"
	"github.com/connwatch/connwatch/internal/outbox/outboxtest"
	"github.com/connwatch/connwatch/internal/sink/notify"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

const snsNamespace = "http://sns.amazonaws.com/doc/2010-03-31/"

// newSNS starts the loopback AWS with a Publish that answers the n-th
// call (from 1) with fail(n), or success when that is nil. AWS_REGION
// names another region: the sink must use the topic's.
func newSNS(t *testing.T, fail func(n int) (status int, code string)) *awstest.Server {
	t.Helper()
	s := awstest.New(t)
	s.Env(t)
	t.Setenv("AWS_REGION", "us-east-1")
	var mu sync.Mutex
	calls := 0
	s.Handle("sns", "Publish", func(r *awstest.Request) awstest.Response {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if fail != nil {
			if status, code := fail(n); status != 0 {
				return awstest.ErrorResponse(r, status, code, "test failure "+code)
			}
		}
		// QueryResponse wraps this in <PublishResponse><PublishResult>,
		// which is where the SDK looks for MessageId.
		return awstest.QueryResponse(r, snsNamespace, fmt.Sprintf("<MessageId>00000000-0000-0000-0000-%012d</MessageId>", n))
	})
	return s
}

func topicARN(s *awstest.Server, name string) string {
	return "arn:aws:sns:" + s.Region + ":" + s.AccountID + ":" + name
}

func TestSNSPublish(t *testing.T) {
	const down = 2
	s := newSNS(t, func(n int) (int, string) {
		if n <= down {
			return http.StatusInternalServerError, "InternalError"
		}
		return 0, ""
	})
	sink, err := notify.NewSNS(context.Background(), notify.SNSOptions{TopicARN: topicARN(s, "connwatch")})
	if err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(t0)
	box := openBox(t, fake, sink.Name())
	pub := &notify.Publisher{Host: "dev-box", InstanceID: "i-0abc", Routes: []notify.Route{{Queue: box}}}
	events := sessionEvents()
	for _, e := range events {
		pub.Write(e)
	}
	outboxtest.Run(t, box, sink.Deliver)
	for range down {
		outboxtest.Skip(t, fake)
	}
	outboxtest.WaitFor(t, "delivery", func() bool { return box.Stats().Delivered == 3 })

	calls := s.Calls("sns", "Publish")
	if len(calls) != down+3 {
		t.Fatalf("%d Publish calls, want %d", len(calls), down+3)
	}
	for i, c := range calls[down:] {
		if c.Auth == nil || !c.Auth.Verified || c.Auth.Service != "sns" || c.Auth.Region != s.Region || c.Auth.AccessKeyID != awstest.AccessKeyID {
			t.Fatalf("Publish %d not validly signed for sns in %s: %+v", i, s.Region, c.Auth)
		}
		m := msg(events[i])
		p := c.Params
		want := map[string][]string{
			"Action":                         {"Publish"},
			"Version":                        {"2010-03-31"},
			"TopicArn":                       {topicARN(s, "connwatch")},
			"Subject":                        {notify.Subject(m)},
			"Message":                        p["Message"],
			"MessageAttributes.entry.1.Name": p["MessageAttributes.entry.1.Name"],
			"MessageAttributes.entry.1.Value.DataType":    {"String"},
			"MessageAttributes.entry.1.Value.StringValue": p["MessageAttributes.entry.1.Value.StringValue"],
			"MessageAttributes.entry.2.Name":              p["MessageAttributes.entry.2.Name"],
			"MessageAttributes.entry.2.Value.DataType":    {"String"},
			"MessageAttributes.entry.2.Value.StringValue": p["MessageAttributes.entry.2.Value.StringValue"],
			"MessageAttributes.entry.3.Name":              p["MessageAttributes.entry.3.Name"],
			"MessageAttributes.entry.3.Value.DataType":    {"String"},
			"MessageAttributes.entry.3.Value.StringValue": p["MessageAttributes.entry.3.Value.StringValue"],
		}
		if diff := cmp.Diff(want, map[string][]string(p)); diff != "" {
			t.Errorf("Publish %d params (-want +got):\n%s", i, diff)
		}
		attrs := map[string]string{}
		for j := 1; j <= 3; j++ {
			attrs[p.Get(fmt.Sprintf("MessageAttributes.entry.%d.Name", j))] = p.Get(fmt.Sprintf("MessageAttributes.entry.%d.Value.StringValue", j))
		}
		if diff := cmp.Diff(map[string]string{"event_type": string(events[i].Type), "host": "dev-box", "instance_id": "i-0abc"}, attrs); diff != "" {
			t.Errorf("Publish %d attributes (-want +got):\n%s", i, diff)
		}
		text, js, ok := strings.Cut(p.Get("Message"), "\n\n")
		if !ok || text != notify.Text(m) {
			t.Errorf("Publish %d message starts %q, want %q", i, text, notify.Text(m))
		}
		var got notify.Message
		if err := json.Unmarshal([]byte(js), &got); err != nil {
			t.Fatalf("Publish %d message JSON: %v", i, err)
		}
		if diff := cmp.Diff(m, got); diff != "" {
			t.Errorf("Publish %d message JSON (-want +got):\n%s", i, diff)
		}
	}
	if st := box.Stats(); st.Failed != down || !strings.Contains(st.LastError, "InternalError") {
		t.Errorf("stats %+v", st)
	}
}

func TestSNSFIFO(t *testing.T) {
	s := newSNS(t, nil)
	sink, err := notify.NewSNS(context.Background(), notify.SNSOptions{TopicARN: topicARN(s, "connwatch.fifo")})
	if err != nil {
		t.Fatal(err)
	}
	e := sessionEvents()[0]
	if n, err := sink.Deliver(context.Background(), []outbox.Record{record(t, 1, e)}); n != 1 || err != nil {
		t.Fatalf("Deliver: %d, %v", n, err)
	}
	c := s.Calls("sns", "Publish")[0]
	if c.Params.Get("MessageGroupId") != "dev-box" || c.Params.Get("MessageDeduplicationId") != notify.Key(e) {
		t.Errorf("FIFO params %v", c.Params)
	}

	plain, _ := notify.NewSNS(context.Background(), notify.SNSOptions{TopicARN: topicARN(s, "connwatch")})
	in, err := plain.Format(msg(e))
	if err != nil || in.MessageGroupId != nil || in.MessageDeduplicationId != nil {
		t.Errorf("standard topic: %+v, %v", in, err)
	}
}

func TestSNSErrors(t *testing.T) {
	for _, tt := range []struct {
		status    int
		code      string
		permanent bool
	}{
		{400, "InvalidParameter", true},
		{400, "ParameterValueInvalid", true},
		{400, "Throttled", false},
		{403, "AuthorizationError", false},
		{404, "NotFound", false},
		{500, "InternalError", false},
	} {
		t.Run(tt.code, func(t *testing.T) {
			s := newSNS(t, func(int) (int, string) { return tt.status, tt.code })
			sink, _ := notify.NewSNS(context.Background(), notify.SNSOptions{TopicARN: topicARN(s, "t")})
			n, err := sink.Deliver(context.Background(), []outbox.Record{record(t, 1, sessionEvents()[0])})
			if n != 0 || err == nil || errors.Is(err, outbox.ErrPermanent) != tt.permanent || !strings.Contains(err.Error(), tt.code) {
				t.Errorf("Deliver: %d, %v; want permanent %v", n, err, tt.permanent)
			}
			if calls := len(s.Calls("sns", "Publish")); calls != 1 {
				t.Errorf("%d calls: the SDK retried", calls)
			}
		})
	}
}

func TestNewSNSChecksTopic(t *testing.T) {
	for _, arn := range []string{"", "connwatch", "arn:aws:sqs:eu-west-1:123456789012:q", "arn:aws:sns::123456789012:t"} {
		if _, err := notify.NewSNS(context.Background(), notify.SNSOptions{TopicARN: arn}); !errors.Is(err, notify.ErrInvalidConfig) {
			t.Errorf("%q: %v", arn, err)
		}
	}
}
