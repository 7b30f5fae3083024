package awstest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// IMDS header names, as the metadata service and the SDK spell them.
const (
	imdsTokenHeader    = "X-Aws-Ec2-Metadata-Token"
	imdsTokenTTLHeader = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	imdsMaxTTL         = 21600
)

// serveIMDS answers like the metadata service of an instance launched with
// HttpTokens=required: a session token from PUT /latest/api/token is needed
// for every GET, which is answered 401 without one.
func (s *Server) serveIMDS(hr *http.Request) Response {
	text := func(status int, body string) Response {
		return Response{Status: status, ContentType: "text/plain", Body: []byte(body)}
	}
	if hr.URL.Path == "/latest/api/token" {
		if hr.Method != http.MethodPut {
			return text(http.StatusMethodNotAllowed, "")
		}
		// The real service refuses tokens to requests that went through a
		// proxy, the SSRF defence IMDSv2 is for.
		if hr.Header.Get("X-Forwarded-For") != "" {
			return text(http.StatusForbidden, "")
		}
		ttl, err := strconv.Atoi(hr.Header.Get(imdsTokenTTLHeader))
		if err != nil || ttl < 1 || ttl > imdsMaxTTL {
			return text(http.StatusBadRequest, "")
		}
		tok := newIMDSToken()
		s.mu.Lock()
		s.tokens[tok] = s.clock.Now().Add(time.Duration(ttl) * time.Second)
		s.mu.Unlock()
		h := http.Header{}
		h.Set(imdsTokenTTLHeader, strconv.Itoa(ttl))
		return Response{ContentType: "text/plain", Header: h, Body: []byte(tok)}
	}

	if hr.Method != http.MethodGet && hr.Method != http.MethodHead {
		return text(http.StatusMethodNotAllowed, "")
	}
	if !s.validToken(hr.Header.Get(imdsTokenHeader)) {
		return text(http.StatusUnauthorized, "")
	}
	body, ok := s.metadata(hr.URL.Path)
	if !ok {
		return text(http.StatusNotFound, "")
	}
	return text(http.StatusOK, body)
}

func (s *Server) validToken(tok string) bool {
	if tok == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[tok]
	return ok && s.clock.Now().Before(exp)
}

// metadata is the instance's metadata tree: the few paths connwatch reads.
func (s *Server) metadata(path string) (string, bool) {
	az := s.Region + "a"
	// The instance's type and private address as the fleet has them.
	s.mu.Lock()
	own := s.ownLocked().Instance
	s.mu.Unlock()
	switch path {
	case "/latest/meta-data/instance-id":
		return s.InstanceID, true
	case "/latest/meta-data/placement/region":
		return s.Region, true
	case "/latest/meta-data/placement/availability-zone":
		return az, true
	case "/latest/meta-data/instance-type":
		return own.Type, true
	case "/latest/meta-data/tags/instance":
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.ec2.metadataTags {
			return "", false
		}
		return strings.Join(slices.Sorted(maps.Keys(s.ownLocked().Tags)), "\n"), true
	case "/latest/dynamic/instance-identity/document":
		doc := map[string]any{
			"accountId":               s.AccountID,
			"architecture":            "x86_64",
			"availabilityZone":        az,
			"billingProducts":         nil,
			"devpayProductCodes":      nil,
			"marketplaceProductCodes": nil,
			"imageId":                 "ami-0123456789abcdef0",
			"instanceId":              s.InstanceID,
			"instanceType":            own.Type,
			"kernelId":                nil,
			"pendingTime":             "2026-01-01T00:00:00Z",
			"privateIp":               own.PrivateIP,
			"ramdiskId":               nil,
			"region":                  s.Region,
			"version":                 "2017-09-30",
		}
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return "", false
		}
		return string(b), true
	}
	if key, ok := strings.CutPrefix(path, "/latest/meta-data/tags/instance/"); ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		v, ok := s.ownLocked().Tags[key]
		return v, ok && s.ec2.metadataTags
	}
	return "", false
}

// SetInstanceMetadataTags turns on or off the instance's tags in IMDS
// (/latest/meta-data/tags/instance), as
// `aws ec2 modify-instance-metadata-options --instance-metadata-tags
// enabled|disabled` does; off, the default, those paths answer 404.
func (s *Server) SetInstanceMetadataTags(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ec2.metadataTags = on
}

// SetInstanceTag sets (or, with an empty value and del, deletes) a tag of
// the instance IMDS describes (s.InstanceID), the fleet's record of it.
func (s *Server) SetInstanceTag(key, value string, del bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if del {
		delete(s.ownLocked().Tags, key)
		return
	}
	s.ownLocked().Tags[key] = value
}

func newIMDSToken() string {
	var b [42]byte
	_, _ = rand.Read(b[:])
	return base64.URLEncoding.EncodeToString(b[:])
}
