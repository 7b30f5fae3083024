package cloudwatch

import (
	"context"
	"time"
)

// Step runs one iteration of Run's loop at the clock's now and returns
// when Run would wake next, so that tests drive the publisher
// deterministically on a fake clock.
func (p *Publisher) Step(ctx context.Context) time.Time { return p.step(ctx) }

// Shutdown is what Run does when its context ends.
func (p *Publisher) Shutdown(ctx context.Context) { p.shutdown(ctx) }
