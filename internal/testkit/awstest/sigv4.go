package awstest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Signature is the SigV4 signature of a request, as parsed from its
// Authorization header:
//
//	AWS4-HMAC-SHA256 Credential=AKID/20261122/eu-west-1/ec2/aws4_request,
//	SignedHeaders=amz-sdk-invocation-id;...;host;x-amz-date, Signature=hex
type Signature struct {
	AccessKeyID   string
	Date          string // YYYYMMDD from the credential scope
	Region        string
	Service       string
	SignedHeaders []string
	AmzDate       string // X-Amz-Date
	Signature     string
	// Verified is true when the signature matched the one the server
	// computed with SecretAccessKey.
	Verified bool
}

type authError struct {
	status    int
	code, msg string
}

const sigV4Algorithm = "AWS4-HMAC-SHA256"

// verifySigV4 checks hr's signature the way AWS does, independently of the
// SDK's signer. It returns what it could parse, and an error reply for a
// request that AWS would refuse.
func verifySigV4(hr *http.Request, body []byte, region string) (*Signature, *authError) {
	authz := hr.Header.Get("Authorization")
	if authz == "" {
		return nil, &authError{http.StatusForbidden, "MissingAuthenticationToken", "Request is missing Authentication Token"}
	}
	malformed := func(what string) *authError {
		return &authError{http.StatusBadRequest, "IncompleteSignature", what}
	}
	alg, rest, _ := strings.Cut(authz, " ")
	if alg != sigV4Algorithm {
		return nil, malformed(fmt.Sprintf("Unsupported AWS 'algorithm': '%s'", alg))
	}
	fields := map[string]string{}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, malformed("Authorization header requires each component to be of the form key=value")
		}
		fields[k] = v
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[k] == "" {
			return nil, malformed(fmt.Sprintf("Authorization header requires '%s' parameter", k))
		}
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return nil, malformed("Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term")
	}
	sig := &Signature{
		AccessKeyID:   scope[0],
		Date:          scope[1],
		Region:        scope[2],
		Service:       scope[3],
		SignedHeaders: strings.Split(fields["SignedHeaders"], ";"),
		AmzDate:       hr.Header.Get("X-Amz-Date"),
		Signature:     fields["Signature"],
	}
	if sig.AccessKeyID != AccessKeyID {
		code := "InvalidClientTokenId"
		if sig.Service == "ec2" {
			code = "AuthFailure"
		}
		return sig, &authError{http.StatusForbidden, code, "The security token included in the request is invalid."}
	}
	if sig.AmzDate == "" {
		return sig, malformed("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
	}
	if !strings.HasPrefix(sig.AmzDate, sig.Date) || len(sig.AmzDate) != len("20060102T150405Z") {
		return sig, &authError{http.StatusForbidden, "SignatureDoesNotMatch",
			fmt.Sprintf("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s'", sig.Date, sig.AmzDate)}
	}
	if sig.Region != region {
		return sig, &authError{http.StatusForbidden, "SignatureDoesNotMatch",
			fmt.Sprintf("Credential should be scoped to a valid region, not '%s'.", sig.Region)}
	}
	if !slices.IsSorted(sig.SignedHeaders) || !slices.Contains(sig.SignedHeaders, "host") || !slices.Contains(sig.SignedHeaders, "x-amz-date") {
		return sig, malformed("SignedHeaders must be sorted and include host and x-amz-date")
	}

	want := computeSignature(hr, body, sig)
	if !hmac.Equal([]byte(want), []byte(sig.Signature)) {
		return sig, &authError{http.StatusForbidden, "SignatureDoesNotMatch",
			"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."}
	}
	sig.Verified = true
	return sig, nil
}

func computeSignature(hr *http.Request, body []byte, sig *Signature) string {
	var canon strings.Builder
	canon.WriteString(hr.Method + "\n")
	canon.WriteString(uriEncode(hr.URL.EscapedPath(), false) + "\n")
	canon.WriteString(canonicalQuery(hr.URL.Query()) + "\n")
	for _, name := range sig.SignedHeaders {
		canon.WriteString(name + ":" + canonicalHeaderValue(hr, name) + "\n")
	}
	canon.WriteString("\n" + strings.Join(sig.SignedHeaders, ";") + "\n")
	payload := hr.Header.Get("X-Amz-Content-Sha256")
	if payload == "" {
		payload = hexSHA256(body)
	}
	canon.WriteString(payload)

	scope := strings.Join([]string{sig.Date, sig.Region, sig.Service, "aws4_request"}, "/")
	toSign := sigV4Algorithm + "\n" + sig.AmzDate + "\n" + scope + "\n" + hexSHA256([]byte(canon.String()))

	key := hmacSHA256([]byte("AWS4"+SecretAccessKey), sig.Date)
	key = hmacSHA256(key, sig.Region)
	key = hmacSHA256(key, sig.Service)
	key = hmacSHA256(key, "aws4_request")
	return hex.EncodeToString(hmacSHA256(key, toSign))
}

func canonicalHeaderValue(hr *http.Request, name string) string {
	var values []string
	switch name {
	case "host":
		values = []string{hr.Host}
	case "content-length":
		values = hr.Header.Values(name)
		if len(values) == 0 {
			values = []string{strconv.FormatInt(hr.ContentLength, 10)}
		}
	default:
		values = hr.Header.Values(name)
	}
	for i, v := range values {
		values[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(values, ",")
}

func canonicalQuery(q url.Values) string {
	var pairs []string
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, uriEncode(k, true)+"="+uriEncode(v, true))
		}
	}
	sort.Strings(pairs)
	return strings.Join(pairs, "&")
}

// uriEncode is SigV4's URI encoding: every byte except the unreserved
// characters A-Z a-z 0-9 - _ . ~ as %XX, and '/' too when encodeSlash.
func uriEncode(s string, encodeSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == '~', c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func hexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}
