// Package clientvpn is the AWS Client VPN session source: it polls
// DescribeClientVpnConnections for the configured endpoints and reports
// every client connection as a session of kind aws-client-vpn.
//
// Client VPN lists active connections and those terminated within the last
// hour, so the source also reports connections that began and ended
// between two polls (in Snapshot.Ended, with both times) — the ones an
// alarm on the endpoint's ActiveConnectionsCount metric never sees.
package clientvpn

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/session"
)

// Name is the source's name in warnings, logs and metrics.
const Name = "aws-client-vpn"

// Warning codes of this source.
const (
	// WarnEndpointUnreadable: an endpoint's connections could not be
	// listed; its sessions may be missing (a blind warning).
	WarnEndpointUnreadable = "client_vpn_endpoint_unreadable"
	// WarnBadConnection: a listed connection had fields the source could
	// not read (times, counters, status).
	WarnBadConnection = "client_vpn_bad_connection"
)

// DefaultPageSize is the page size asked for when Config.PageSize is 0:
// the largest DescribeClientVpnConnections allows.
const DefaultPageSize int32 = 1000

// Page sizes DescribeClientVpnConnections accepts (MaxResults).
const (
	MinPageSize int32 = 5
	MaxPageSize int32 = 1000
)

// listedFor is how long Client VPN keeps listing a terminated connection:
// "connections that have been terminated within the last 60 minutes".
const listedFor = time.Hour

// maxPages bounds one endpoint's listing (a million connections at the
// largest page size), against a service that never stops paging.
const maxPages = 1000

// ErrInvalidConfig is wrapped by every error New returns for bad Config.
var ErrInvalidConfig = errors.New("invalid Client VPN source config")

// endpointID is the form of a Client VPN endpoint id.
var endpointID = regexp.MustCompile(`^cvpn-endpoint-[0-9a-f]+$`)

// API is the part of the EC2 client the source uses; *ec2.Client
// satisfies it.
type API interface {
	DescribeClientVpnConnections(ctx context.Context, in *ec2.DescribeClientVpnConnectionsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeClientVpnConnectionsOutput, error)
}

var _ API = (*ec2.Client)(nil)

// Config configures a Source.
type Config struct {
	// Endpoints are the Client VPN endpoint ids to watch
	// (cvpn-endpoint-<hex>); at least one.
	Endpoints []string
	// PageSize is DescribeClientVpnConnections' MaxResults, 5 to 1000;
	// 0 means DefaultPageSize.
	PageSize int32
	// Clock tells the poll time; nil means the system clock.
	Clock clock.Clock
}

// Validate checks c, naming the bad field and value.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("endpoints: at least one Client VPN endpoint id is required: %w", ErrInvalidConfig)
	}
	seen := make(map[string]int, len(c.Endpoints))
	for i, e := range c.Endpoints {
		if !endpointID.MatchString(e) {
			return fmt.Errorf("endpoints[%d]: %q is not a Client VPN endpoint id (cvpn-endpoint-<hex>): %w", i, e, ErrInvalidConfig)
		}
		if j, dup := seen[e]; dup {
			return fmt.Errorf("endpoints[%d]: %q repeats endpoints[%d]: %w", i, e, j, ErrInvalidConfig)
		}
		seen[e] = i
	}
	if c.PageSize != 0 && (c.PageSize < MinPageSize || c.PageSize > MaxPageSize) {
		return fmt.Errorf("page size: %d is outside %d-%d: %w", c.PageSize, MinPageSize, MaxPageSize, ErrInvalidConfig)
	}
	return nil
}

// Source polls Client VPN endpoints. Poll must not be called concurrently.
type Source struct {
	api       API
	endpoints []string
	pageSize  int32
	clock     clock.Clock
	// created is when the Source was made, to the second (Client VPN's
	// resolution): connections that ended before it are history.
	created time.Time
	// conns are the connections the source remembers: live ones, and
	// ended ones until Client VPN stops listing them.
	conns map[string]*conn
}

// conn is what the source remembers of one connection.
type conn struct {
	endpoint string
	// sess is the session as last reported (live) or as ended.
	sess    session.Session
	ingress uint64
	// ended is set once the connection has been reported in Ended or
	// was found ended before the Source existed; endedAt is when it
	// ended.
	ended   bool
	endedAt time.Time
}

// New returns a Source that polls the endpoints in cfg through api.
func New(api API, cfg Config) (*Source, error) {
	if api == nil {
		return nil, fmt.Errorf("new Client VPN source: no EC2 client: %w", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new Client VPN source: %w", err)
	}
	s := &Source{
		api:       api,
		endpoints: slices.Clone(cfg.Endpoints),
		pageSize:  cmp.Or(cfg.PageSize, DefaultPageSize),
		clock:     cfg.Clock,
		conns:     make(map[string]*conn),
	}
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	s.created = s.clock.Now().Truncate(time.Second)
	return s, nil
}

// Name returns the source's name.
func (s *Source) Name() string { return Name }

// Kind returns the kind of session the source reports.
func (s *Source) Kind() session.Kind { return session.KindAWSClientVPN }

// listing is one endpoint's connections, or why they could not be read.
type listing struct {
	conns []types.ClientVpnConnection
	err   error
}

// Poll lists every endpoint's connections and reports:
//
//   - in Sessions, every connection whose status is not terminated.
//     "terminating" and "failed-to-terminate" count as connected: the
//     first is a disconnect still in progress, the second one that
//     Client VPN failed to carry out, so the client may well still be
//     there; calling either gone could let an idle policy act while
//     someone is connected.
//   - in Ended, once each: a connection reported live before and now
//     terminated (at its connectionEndTime) or no longer listed (at the
//     poll time), and a connection seen for the first time already
//     terminated — it began and ended between two polls — with both its
//     times. Connections that ended before the Source was made are
//     history and not reported; that is what the first poll finds of the
//     hour Client VPN looks back.
//
// An endpoint that cannot be listed gets a blind warning (kind
// aws-client-vpn) naming it and the AWS error code; the sessions the last
// good poll saw on it are listed again as they were, and none of them
// ends. Poll returns an error only when no endpoint could be listed, and
// then changes nothing it remembers.
func (s *Source) Poll(ctx context.Context) (session.Snapshot, error) {
	now := s.clock.Now()
	lists := make([]listing, len(s.endpoints))
	failed := 0
	for i, ep := range s.endpoints {
		lists[i].conns, lists[i].err = s.list(ctx, ep)
		if lists[i].err != nil {
			failed++
		}
	}
	// A cancelled poll is not reported at all: applying part of it would
	// put ends in a snapshot nobody receives.
	if err := ctx.Err(); err != nil {
		return session.Snapshot{}, fmt.Errorf("poll Client VPN endpoints: %w", err)
	}
	if failed == len(s.endpoints) {
		errs := make([]error, len(lists))
		for i, l := range lists {
			errs[i] = fmt.Errorf("%s: %w", s.endpoints[i], l.err)
		}
		return session.Snapshot{}, fmt.Errorf("poll Client VPN endpoints: %w", errors.Join(errs...))
	}

	snap := session.Snapshot{Time: now, Complete: true, Sessions: []session.Session{},
		PendingAuth: []session.PendingAuth{}, Warnings: []session.Warning{}}
	listed := make(map[string]bool) // connection ids listed by this poll
	polled := make(map[string]bool) // endpoints listed by this poll
	for i, ep := range s.endpoints {
		if err := lists[i].err; err != nil {
			snap.Warn(session.Warning{Code: WarnEndpointUnreadable, Source: Name, Kind: session.KindAWSClientVPN, Blind: true,
				Message: fmt.Sprintf("cannot list the connections of Client VPN endpoint %s (%s): its sessions may be missing", ep, errorCode(err))})
			continue
		}
		polled[ep] = true
		s.apply(ep, lists[i].conns, now, listed, &snap)
	}
	for id, c := range s.conns {
		switch {
		case !polled[c.endpoint]:
			if !c.ended {
				snap.Sessions = append(snap.Sessions, c.sess)
			}
		case listed[id]:
		case !c.ended:
			// Gone from the list while live: ended at some point since
			// the last poll; now is the best time known.
			s.end(c, now, &snap)
		case now.Sub(c.endedAt) > listedFor:
			// No longer listed and older than anything Client VPN
			// lists: it cannot come back, so it need not be remembered.
			delete(s.conns, id)
		}
	}
	snap.Sort()
	slices.SortFunc(snap.Ended, func(a, b session.Session) int {
		return cmp.Or(a.EndedAt.Compare(*b.EndedAt), strings.Compare(a.ID, b.ID))
	})
	return snap, nil
}

// list returns all of an endpoint's connections, page by page.
func (s *Source) list(ctx context.Context, ep string) ([]types.ClientVpnConnection, error) {
	p := ec2.NewDescribeClientVpnConnectionsPaginator(s.api,
		&ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(ep), MaxResults: aws.Int32(s.pageSize)},
		func(o *ec2.DescribeClientVpnConnectionsPaginatorOptions) { o.StopOnDuplicateToken = true })
	var out []types.ClientVpnConnection
	for pages := 0; p.HasMorePages(); pages++ {
		if pages == maxPages {
			return nil, fmt.Errorf("list connections of %s: more than %d pages", ep, maxPages)
		}
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Connections...)
	}
	return out, nil
}

// apply takes one endpoint's listing into the source's memory and the
// snapshot, marking in listed the ids it saw.
func (s *Source) apply(ep string, conns []types.ClientVpnConnection, now time.Time, listed map[string]bool, snap *session.Snapshot) {
	var problems []string
	for _, raw := range conns {
		r := parseConnection(raw)
		if r.id == "" {
			problems = append(problems, "a connection without an id")
			continue
		}
		if listed[r.id] {
			continue // repeated on a later page
		}
		listed[r.id] = true
		for _, p := range r.problems {
			problems = append(problems, r.id+": "+p)
		}
		c := s.conns[r.id]
		if r.status != types.ClientVpnConnectionStatusCodeTerminated {
			if c == nil || c.ended {
				// New, or back after it was taken for gone.
				c = &conn{endpoint: ep}
				s.conns[r.id] = c
				s.update(c, r, now, true)
			} else {
				s.update(c, r, now, false)
			}
			snap.Sessions = append(snap.Sessions, c.sess)
			continue
		}
		if c != nil && c.ended {
			continue // reported already
		}
		end := r.end
		if end.IsZero() {
			end = now // unknown (a problem noted above): the earliest we know it by
		}
		if c == nil {
			c = &conn{endpoint: ep}
			s.conns[r.id] = c
			if end.Before(s.created) {
				// Ended before we were watching: history, not news.
				c.ended, c.endedAt = true, end
				continue
			}
			s.update(c, r, now, true)
		} else {
			s.update(c, r, now, false)
		}
		s.end(c, end, snap)
	}
	if len(problems) > 0 {
		msg := fmt.Sprintf("Client VPN endpoint %s: %d unreadable field(s): %s", ep, len(problems), problems[0])
		if len(problems) > 1 {
			msg += " (and more)"
		}
		snap.Warn(session.Warning{Code: WarnBadConnection, Source: Name, Message: msg})
	}
}

// update refreshes c's session from r. LastActivityAt is the poll time at
// which ingress bytes (sent by the client) were last seen to grow; before
// that, the connection's start, but never earlier than the Source's
// creation: what a connection did before we watched is unknown, and
// calling it idle since a start hours ago could let an idle policy act
// under a user who is busy.
func (s *Source) update(c *conn, r record, now time.Time, first bool) {
	start := c.sess.StartedAt
	activity := time.Time{}
	if c.sess.LastActivityAt != nil {
		activity = *c.sess.LastActivityAt
	}
	if first {
		start = r.start
		if start.IsZero() {
			start = now // unknown: first seen, and kept from now on
		}
		activity = start
		if activity.Before(s.created) {
			activity = s.created
		}
	} else if r.ingress > c.ingress {
		activity = now
	}
	c.ingress = r.ingress
	c.sess = session.Session{
		ID:             r.id,
		Kind:           session.KindAWSClientVPN,
		User:           cmp.Or(r.username, r.commonName),
		StartedAt:      start,
		LastActivityAt: &activity,
		VPN: &session.VPN{
			Server:       c.endpoint,
			CommonName:   r.commonName,
			Username:     r.username,
			VirtualAddr:  r.virtualAddr,
			ConnectionID: r.id,
			BytesIn:      r.ingress,
			BytesOut:     r.egress,
			Status:       string(r.status),
		},
	}
}

// end reports c as ended at t.
func (s *Source) end(c *conn, t time.Time, snap *session.Snapshot) {
	c.ended, c.endedAt = true, t
	e := c.sess
	e.EndedAt = &t
	snap.Ended = append(snap.Ended, e)
}

// errorCode names why a listing failed: the AWS error code when AWS
// answered, else the error itself.
func errorCode(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		if msg := api.ErrorMessage(); msg != "" {
			return api.ErrorCode() + ": " + msg
		}
		return api.ErrorCode()
	}
	return err.Error()
}
