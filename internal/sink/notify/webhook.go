package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/connwatch/connwatch/internal/outbox"
	"github.com/connwatch/connwatch/internal/secret"
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
	// URLFile, instead of URL, names a file holding the URL on one line
	// (read with secret.ReadFile: refused when others can change it), so
	// that the URL is not on the agent's command line for ps to show.
	// It is read by NewWebhook and again by Reload.
	URLFile string
	// Logger gets a warning when URLFile can be read by every user; nil:
	// no warning.
	Logger *slog.Logger
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
	o      WebhookOptions
	target atomic.Pointer[target]
}

// target is where a Webhook posts.
type target struct {
	url  string
	site string // scheme://host, for errors
}

// NewWebhook checks o and returns the sink.
func NewWebhook(o WebhookOptions) (*Webhook, error) {
	if o.Name == "" {
		o.Name = "webhook"
	}
	if o.URL != "" && o.URLFile != "" {
		return nil, fmt.Errorf("webhook %s: both a URL and a URL file: %w", o.Name, ErrInvalidConfig)
	}
	w := &Webhook{o: o}
	tg, err := w.load()
	if err != nil {
		return nil, err
	}
	w.target.Store(tg)
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
	w.o = o
	return w, nil
}

// load returns the URL the options give, checked, reading URLFile.
func (w *Webhook) load() (*target, error) {
	raw, from := w.o.URL, "URL"
	if w.o.URLFile != "" {
		f, err := secret.ReadFile(w.o.URLFile)
		if err != nil {
			return nil, fmt.Errorf("webhook %s: %w", w.o.Name, err)
		}
		if f.WorldReadable && w.o.Logger != nil {
			w.o.Logger.Warn("the webhook URL file can be read by every user: chmod o-r it", "sink", w.o.Name, "file", f.Path)
		}
		raw, from = f.Value, "URL in "+w.o.URLFile
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// err would repeat the URL, which may hold a token.
		return nil, fmt.Errorf("webhook %s: %s is not an http(s) URL: %w", w.o.Name, from, ErrInvalidConfig)
	}
	return &target{url: raw, site: u.Scheme + "://" + u.Host}, nil
}

// Reload reads URLFile again (on SIGHUP), so that a rotated URL is used
// without a restart. On an error the URL in use stays. Without URLFile it
// does nothing.
func (w *Webhook) Reload() error {
	if w.o.URLFile == "" {
		return nil
	}
	tg, err := w.load()
	if err != nil {
		return err
	}
	w.target.Store(tg)
	return nil
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
	tg := w.target.Load()
	body, err := w.Format(m)
	if err != nil {
		return fmt.Errorf("format webhook body: %w (%w)", err, outbox.ErrPermanent)
	}
	ctx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tg.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("post to %s: %w", tg.site, err)
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
			return fmt.Errorf("post to %s: no answer within %s: %w", tg.site, w.o.Timeout, err)
		}
		return fmt.Errorf("post to %s: %w", tg.site, err)
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	// Read a little more so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("post to %s: %s", tg.site, resp.Status)
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
	return fmt.Sprintf("%s %s (%s)", kind, w.o.Name, strings.TrimSuffix(w.target.Load().site, "/"))
}
