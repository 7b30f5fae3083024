package awstest

import (
	"net/http/httptest"
	"testing"
)

// TestSigV4Vectors checks the verifier against the published examples of
// the AWS Signature Version 4 test suite (get-vanilla and
// get-vanilla-query-order-key-case), whose keys are AccessKeyID and
// SecretAccessKey.
func TestSigV4Vectors(t *testing.T) {
	for _, tt := range []struct{ target, sig string }{
		{"/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
		{"/?Param2=value2&Param1=value1", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
	} {
		req := httptest.NewRequest("GET", "http://example.amazonaws.com"+tt.target, nil)
		req.Header.Set("X-Amz-Date", "20150830T123600Z")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature="+tt.sig)
		sig, err := verifySigV4(req, nil, "us-east-1")
		if err != nil || !sig.Verified {
			t.Errorf("%s: %+v, %+v; want verified", tt.target, sig, err)
		}
	}
}
