package hold

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sync"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// IMDSTag reads one tag of this EC2 instance from the instance metadata
// service (IMDSv2, through the AWS SDK's client and its standard
// settings), where the instance's tags are served under
// tags/instance/KEY once its metadata options turn them on.
type IMDSTag struct {
	Key string

	mu     sync.Mutex
	client *imds.Client
	id     string // this instance's id, for the hint when tags are off
}

var _ TagReader = (*IMDSTag)(nil)

// ReadTag implements TagReader. The service answers 404 both for a tag
// the instance does not have and when it serves no tags at all: the list
// of tags, tags/instance, tells the two apart.
func (t *IMDSTag) ReadTag(ctx context.Context) (string, error) {
	c, err := t.metadataClient(ctx)
	if err != nil {
		return "", err
	}
	v, err := get(ctx, c, "tags/instance/"+t.Key, MaxStartHoldValue+1)
	if !notFound(err) {
		return v, err
	}
	if _, err := get(ctx, c, "tags/instance", 0); err != nil {
		if !notFound(err) {
			return "", err
		}
		return "", fmt.Errorf("%w: enable them with `aws ec2 modify-instance-metadata-options --instance-id %s --instance-metadata-tags enabled`", ErrTagsDisabled, t.instanceID(ctx, c))
	}
	return "", fmt.Errorf("read instance tag %s: %w", t.Key, ErrTagAbsent)
}

var instanceIDPattern = regexp.MustCompile(`^i-[0-9a-f]{8,17}$`)

// instanceID reads this instance's id once ("INSTANCE_ID" until a read
// gives one): while tags stay off the hint repeats every read.
func (t *IMDSTag) instanceID(ctx context.Context, c *imds.Client) string {
	t.mu.Lock()
	id := t.id
	t.mu.Unlock()
	if id != "" {
		return id
	}
	id, _ = get(ctx, c, "instance-id", 64)
	if !instanceIDPattern.MatchString(id) {
		return "INSTANCE_ID"
	}
	t.mu.Lock()
	t.id = id
	t.mu.Unlock()
	return id
}

// metadataClient makes the client at the first read, so an agent started
// before the network is up still starts.
func (t *IMDSTag) metadataClient(ctx context.Context) (*imds.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil {
		return t.client, nil
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("load AWS config: %w", err)
	}
	t.client = imds.NewFromConfig(cfg)
	return t.client, nil
}

// get reads a metadata path, at most limit bytes of it (0: none).
func get(ctx context.Context, c *imds.Client, path string, limit int64) (string, error) {
	out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", fmt.Errorf("read instance metadata %s: %w", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(io.LimitReader(out.Content, limit))
	if err != nil {
		return "", fmt.Errorf("read instance metadata %s: %w", path, err)
	}
	return string(b), nil
}

func notFound(err error) bool {
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound
}
