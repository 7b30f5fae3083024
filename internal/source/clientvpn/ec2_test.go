package clientvpn

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

// TestEC2Region: the region is the one given, else the SDK's, else the
// instance's from IMDS; the client is made once, at the first call.
func TestEC2Region(t *testing.T) {
	const endpoint = "cvpn-endpoint-0123456789abcdef0"
	for _, tt := range []struct {
		name, given, env, want string
	}{
		// The test server takes only its own region, eu-west-3: a request
		// signed for another one fails.
		{"given", "eu-west-3", "us-east-2", "eu-west-3"},
		{"sdk", "", "eu-west-3", "eu-west-3"},
		{"imds", "", "", "eu-west-3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := awstest.New(t, awstest.WithRegion("eu-west-3"))
			srv.Env(t)
			t.Setenv("AWS_REGION", tt.env)
			t.Setenv("AWS_DEFAULT_REGION", tt.env)
			srv.AddClientVPNEndpoint(endpoint)
			api := NewEC2(tt.given)
			for range 2 {
				if _, err := api.DescribeClientVpnConnections(t.Context(), &ec2.DescribeClientVpnConnectionsInput{ClientVpnEndpointId: aws.String(endpoint)}); err != nil {
					t.Fatal(err)
				}
			}
			calls := srv.Calls("ec2", "DescribeClientVpnConnections")
			if len(calls) != 2 || calls[0].Auth == nil || calls[0].Auth.Region != tt.want {
				t.Fatalf("calls %d, signed for %+v, want region %s", len(calls), calls[0].Auth, tt.want)
			}
			imdsCalls := 0
			for _, r := range srv.Requests() {
				// The SDK reads the region from the identity document.
				if r.Service == "imds" && r.Method == "GET" {
					imdsCalls++
				}
			}
			if wantIMDS := map[bool]int{true: 1, false: 0}[tt.name == "imds"]; imdsCalls != wantIMDS {
				t.Errorf("IMDS asked for the region %d times, want %d", imdsCalls, wantIMDS)
			}
		})
	}
}
