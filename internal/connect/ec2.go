package connect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/connwatch/connwatch/internal/termtext"
)

// EC2 is the part of the EC2 API that connect uses; SDK(client) is one.
type EC2 interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	StartInstances(ctx context.Context, in *ec2.StartInstancesInput, optFns ...func(*ec2.Options)) (*ec2.StartInstancesOutput, error)
	CreateTags(ctx context.Context, in *ec2.CreateTagsInput, optFns ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

// SDK wraps an SDK client as an EC2. It holds the client's method values,
// never the *ec2.Client: the binary links text/template (through
// exporter-toolkit), and wherever a method may be called by name the
// linker keeps every exported method of every type an interface value can
// reach, fields included. A *ec2.Client so reached keeps all of EC2's
// operations and their serializers, some 19 MB of text that every
// connwatch process would map; held as three funcs, three are linked.
func SDK(c *ec2.Client) EC2 {
	return sdkClient{describe: c.DescribeInstances, start: c.StartInstances, tag: c.CreateTags}
}

type sdkClient struct {
	describe func(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	start    func(context.Context, *ec2.StartInstancesInput, ...func(*ec2.Options)) (*ec2.StartInstancesOutput, error)
	tag      func(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

func (s sdkClient) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	return s.describe(ctx, in, optFns...)
}

func (s sdkClient) StartInstances(ctx context.Context, in *ec2.StartInstancesInput, optFns ...func(*ec2.Options)) (*ec2.StartInstancesOutput, error) {
	return s.start(ctx, in, optFns...)
}

func (s sdkClient) CreateTags(ctx context.Context, in *ec2.CreateTagsInput, optFns ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	return s.tag(ctx, in, optFns...)
}

// Sentinels for what callers and tests branch on.
var (
	// ErrNotFound: no such instance, or no instance with that Name tag
	// that is not terminated.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: more than one instance has the Name tag.
	ErrAmbiguous = errors.New("more than one instance has that Name tag")
	// ErrTerminated: the instance is terminated or shutting down.
	ErrTerminated = errors.New("terminated")
	// ErrStartFailed: the instance went back to stopped after the start.
	ErrStartFailed = errors.New("start failed")
	// ErrNoAddress: the instance has no address of the kind asked for.
	ErrNoAddress = errors.New("no address")
	// ErrTimeout: --timeout ran out; the message names the phase.
	ErrTimeout = errors.New("timed out")
)

// maxPages bounds the pages of one DescribeInstances by Name tag.
const maxPages = 20

// The IAM actions connect needs, named in errors.
const (
	iamDescribe = "ec2:DescribeInstances"
	iamStart    = "ec2:StartInstances"
	iamTag      = "ec2:CreateTags"
)

// APIError is an error AWS returned, with the call it came from and the
// IAM action that call needs.
type APIError struct {
	Op     string // "describe instance i-0123456789abcdef0"; may be empty
	Action string // "ec2:DescribeInstances"
	Err    error
}

func (e *APIError) Error() string {
	prefix := ""
	if e.Op != "" {
		prefix = e.Op + ": "
	}
	var api smithy.APIError
	if !errors.As(e.Err, &api) {
		return prefix + e.Err.Error()
	}
	msg := prefix + termtext.Escape(api.ErrorCode())
	if m := api.ErrorMessage(); m != "" {
		msg += ": " + termtext.Escape(m)
	}
	switch api.ErrorCode() {
	case "UnauthorizedOperation", "AccessDenied", "AccessDeniedException":
		msg += " (the IAM policy must allow " + e.Action + ")"
	case "AuthFailure", "InvalidClientTokenId", "ExpiredToken", "RequestExpired":
		msg += " (check the AWS credentials: profile, environment, SSO login)"
	}
	return msg
}

func (e *APIError) Unwrap() error { return e.Err }

// errorCode is the AWS error code in err, if any.
func errorCode(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// transient tells whether polling again may succeed where err failed:
// throttling, EC2's 5xx, a network error on the way to the endpoint. The
// SDK's retryer has already retried these a few times.
func transient(err error) bool {
	switch errorCode(err) {
	case "RequestLimitExceeded", "Throttling", "ThrottlingException", "InternalError",
		"InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout":
		return true
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// state is an instance's state name.
func state(in types.Instance) types.InstanceStateName {
	if in.State == nil {
		return ""
	}
	return in.State.Name
}

// hibernated tells whether a stopped instance was hibernated.
func hibernated(in types.Instance) bool {
	return in.StateReason != nil && aws.ToString(in.StateReason.Code) == "Client.UserInitiatedHibernate"
}

// stateReason is EC2's reason for the last state change, for errors.
func stateReason(in types.Instance) string {
	if in.StateReason != nil && aws.ToString(in.StateReason.Message) != "" {
		return termtext.Escape(aws.ToString(in.StateReason.Message))
	}
	return termtext.Escape(aws.ToString(in.StateTransitionReason))
}

func nameTag(in types.Instance) string {
	for _, t := range in.Tags {
		if aws.ToString(t.Key) == "Name" {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// gone tells whether the instance can never run again.
func gone(s types.InstanceStateName) bool {
	return s == types.InstanceStateNameTerminated || s == types.InstanceStateNameShuttingDown
}

// describe returns the instance id as DescribeInstances sees it.
func describe(ctx context.Context, c EC2, id, region string) (types.Instance, error) {
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		if strings.HasPrefix(errorCode(err), "InvalidInstanceID.") { // NotFound, Malformed
			return types.Instance{}, fmt.Errorf("find instance %s%s: %w (%w)", id, inRegion(region), ErrNotFound, &APIError{Action: iamDescribe, Err: err})
		}
		return types.Instance{}, &APIError{Op: "describe instance " + id, Action: iamDescribe, Err: err}
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			if aws.ToString(in.InstanceId) == id {
				return in, nil
			}
		}
	}
	return types.Instance{}, fmt.Errorf("find instance %s%s: %w", id, inRegion(region), ErrNotFound)
}

// findByName returns the one instance whose Name tag is name and that is
// not terminated or shutting down.
func findByName(ctx context.Context, c EC2, name, region string) (types.Instance, error) {
	in := &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("tag:Name"), Values: []string{escapeFilter(name)}}}}
	var live, dead []types.Instance
	for page := 0; ; page++ {
		if page == maxPages {
			return types.Instance{}, fmt.Errorf("find instance named %q%s: more than %d pages of matches", termtext.Escape(name), inRegion(region), maxPages)
		}
		out, err := c.DescribeInstances(ctx, in)
		if err != nil {
			return types.Instance{}, &APIError{Op: fmt.Sprintf("find instance named %q", termtext.Escape(name)), Action: iamDescribe, Err: err}
		}
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				if nameTag(i) != name { // the filter is exact too; make sure
					continue
				}
				if gone(state(i)) {
					dead = append(dead, i)
				} else {
					live = append(live, i)
				}
			}
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in.NextToken = out.NextToken
	}
	switch {
	case len(live) == 1:
		return live[0], nil
	case len(live) > 1:
		return types.Instance{}, fmt.Errorf("find instance named %q%s: %w: %s; give the instance id", termtext.Escape(name), inRegion(region), ErrAmbiguous, list(live))
	case len(dead) > 0:
		return types.Instance{}, fmt.Errorf("find instance named %q%s: %w, only %s", termtext.Escape(name), inRegion(region), ErrNotFound, list(dead))
	}
	return types.Instance{}, fmt.Errorf("find instance named %q%s: %w", termtext.Escape(name), inRegion(region), ErrNotFound)
}

// list describes instances for an error: "i-1 (running, "dev"), ...".
func list(ins []types.Instance) string {
	sort.Slice(ins, func(i, j int) bool { return aws.ToString(ins[i].InstanceId) < aws.ToString(ins[j].InstanceId) })
	var parts []string
	for _, in := range ins {
		parts = append(parts, fmt.Sprintf("%s (%s, %q)", aws.ToString(in.InstanceId), state(in), termtext.Escape(nameTag(in))))
	}
	return strings.Join(parts, ", ")
}

// escapeFilter escapes the wildcards of an EC2 filter value (* and ?)
// and the backslash that escapes them.
func escapeFilter(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`).Replace(s)
}

func inRegion(region string) string {
	if region == "" {
		return ""
	}
	return " in " + region
}
