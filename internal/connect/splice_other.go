//go:build !linux

package connect

import (
	"io"
	"net"
	"os"
)

// pipeToSocket leaves the work to io.Copy outside Linux.
func pipeToSocket(net.Conn, io.Reader) (bool, error) { return false, nil }

// PollableStdin returns os.Stdin outside Linux.
func PollableStdin() *os.File { return os.Stdin }
