package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/connwatch/connwatch/internal/outbox"
)

// HeaderIdempotencyKey carries Message.Key on every webhook request.
const HeaderIdempotencyKey = "Idempotency-Key"

// DefaultTimeout bounds one delivery attempt when a sink's Timeout is zero.
const DefaultTimeout = 10 * time.Second

// ErrInvalidConfig is wrapped by the constructors' errors.
var ErrInvalidConfig = errors.New("invalid sink configuration")

// WebhookOptions configure a Webhook.
type WebhookOptions struct {
	// Name names the sink (and its outbox); default "webhook".
	Name string
	// URL is an http or https URL. It is treated as a secret (Slack's
	// carry a token): errors and logs show only its scheme and host.
	URL string
	// Header is sent with every request (e.g. Authorization). It cannot
	// replace Content-Type or Idempotency-Key.
	Header http.Header
	// Slack sends {"text": Text(m)} for a Slack (or Mattermost, Teams
	// workflow, Discord /slack) incoming webhook instead of the Message.
	Slack bool
	// Timeout bounds one request; zero means DefaultTimeout.
	Timeout time.Duration
	// Client sends the requests; nil means a client that does not follow
	// redirects (a redirected POST would turn into a GET).
	Client *http.Client
}

// Webhook posts each message to a URL. A 2xx answer is a delivery; 408,
// 429, 5xx, other non-2xx answers and network errors are retried; any
// other 4xx is a permanent failure (outbox.ErrPermanent): the message is
// dropped and logged rather than retried forever.
type Webhook struct {
	o    WebhookOptions
	site string // scheme://host, for errors
}

// NewWebhook checks o and returns the sink.
func NewWebhook(o WebhookOptions) (*Webhook, error) {
	if o.Name == "" {
		o.Name = "webhook"
	}
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// err would repeat the URL, which may hold a token.
		return nil, fmt.Errorf("webhook %s: URL is not an http(s) URL: %w", o.Name, ErrInvalidConfig)
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("webhook %s: negative timeout %s: %w", o.Name, o.Timeout, ErrInvalidConfig)
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	o.Header = o.Header.Clone()
	return &Webhook{o: o, site: u.Scheme + "://" + u.Host}, nil
}

// Name is the sink's name.
func (w *Webhook) Name() string { return w.o.Name }

// slackBody is a Slack incoming webhook message.
type slackBody struct {
	Text string `json:"text"`
}

// Format returns the request body for m: the Message as JSON, exactly,
// or with Slack set, {"text": SlackText(m)}.
func (w *Webhook) Format(m Message) ([]byte, error) {
	if w.o.Slack {
		return json.Marshal(slackBody{Text: SlackText(m)})
	}
	return json.Marshal(m)
}

// SlackText is Text(m) as Slack's message formatting needs it: "&", "<"
// and ">" become "&amp;", "&lt;" and "&gt;", so a user named <!channel>,
// <@U0123> or <http://x|y> is shown, not turned into a mention or a
// link; and "@channel", "@here", "@everyone" and "@all", which
// Slack-compatible receivers (Mattermost, Discord's /slack endpoint)
// treat as mentions in plain text, get a zero-width space after the "@".
func SlackText(m Message) string {
	t := slackEscaper.Replace(Text(m))
	return plainMention.ReplaceAllString(t, "@\u200b$1")
}

var (
	slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
	plainMention = regexp.MustCompile(`(?i)@(channel|here|everyone|all)\b`)
)

var _ outbox.Deliver = (*Webhook)(nil).Deliver

// Deliver posts recs one by one; it is an outbox.Deliver.
func (w *Webhook) Deliver(ctx context.Context, recs []outbox.Record) (int, error) {
	return deliverEach(ctx, recs, w.post)
}

func (w *Webhook) post(ctx context.Context, m Message) error {
	body, err := w.Format(m)
	if err != nil {
		return fmt.Errorf("format webhook body: %w (%w)", err, outbox.ErrPermanent)
	}
	ctx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.o.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("post to %s: %w", w.site, err)
	}
	req.Header.Set("User-Agent", "connwatch")
	for k, vs := range w.o.Header {
		req.Header[http.CanonicalHeaderKey(k)] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderIdempotencyKey, m.Key)

	resp, err := w.o.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // drop the URL
		}
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("post to %s: no answer within %s: %w", w.site, w.o.Timeout, err)
		}
		return fmt.Errorf("post to %s: %w", w.site, err)
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	// Read a little more so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("post to %s: %s", w.site, resp.Status)
	if said := oneLine(string(head), 200); said != "" {
		err = fmt.Errorf("%w: %s", err, said)
	}
	if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
		err = fmt.Errorf("%w (redirect not followed: fix the URL)", err)
	}
	if permanentStatus(resp.StatusCode) {
		return fmt.Errorf("%w (%w)", err, outbox.ErrPermanent)
	}
	return err
}

// permanentStatus tells whether a webhook answer means that sending the
// same request again cannot succeed.
func permanentStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return code >= 400 && code < 500
}

// String describes the sink without its URL's secrets.
func (w *Webhook) String() string {
	kind := "webhook"
	if w.o.Slack {
		kind = "slack webhook"
	}
	return fmt.Sprintf("%s %s (%s)", kind, w.o.Name, strings.TrimSuffix(w.site, "/"))
}
