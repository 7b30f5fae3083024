//go:build !linux

package connect

import (
	"io"
	"net"
	"os"
)

// pipeToSocket leaves the work to io.Copy outside Linux.
func pipeToSocket(net.Conn, io.Reader) (int64, bool, error) { return 0, false, nil }

// PollableStdin returns os.Stdin outside Linux.
func PollableStdin() *os.File { return os.Stdin }
