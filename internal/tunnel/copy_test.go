package tunnel

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"testing"
)

// chunkReader returns its chunks one per Read (each cut to the buffer),
// recording the size of every buffer it was given.
type chunkReader struct {
	chunks [][]byte
	sizes  []int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.sizes = append(r.sizes, len(p))
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	if n == len(r.chunks[0]) {
		r.chunks = r.chunks[1:]
	} else {
		r.chunks[0] = r.chunks[0][n:]
	}
	return n, nil
}

// copyConn reads through its small buffer until a read fills it, then
// through a big one until a read would have fitted the small one, and
// copies every byte in order.
func TestCopyConnBorrowsWhileBusy(t *testing.T) {
	chunk := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	r := &chunkReader{chunks: [][]byte{
		chunk(100, 'a'),       // a conversation: small buffer
		chunk(smallCopy, 'b'), // fills it: borrow
		chunk(bigCopy, 'c'),   // a transfer, through the big one
		chunk(smallCopy, 'd'), // short of the big one but not of the small: keep
		chunk(10, 'e'),        // would have fitted the small one: give back
		chunk(100, 'f'),
	}}
	var want []byte
	for _, c := range r.chunks {
		want = append(want, c...)
	}
	var out bytes.Buffer
	st := &streamLog{r: r}
	if err := copyConn(&out, r, st); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("copied %d bytes, want %d in order", out.Len(), len(want))
	}
	wantSizes := []int{smallCopy, smallCopy, bigCopy, bigCopy, bigCopy, smallCopy, smallCopy}
	if !slices.Equal(r.sizes, wantSizes) {
		t.Errorf("buffer sizes %v, want %v", r.sizes, wantSizes)
	}
	// Streaming from the read that filled the small buffer (the 2nd) to
	// the one that would have fitted it (the 5th).
	if want := []string{"begin after 2 reads", "end after 5 reads"}; !slices.Equal(st.log, want) {
		t.Errorf("streams told %q, want %q", st.log, want)
	}

	// A transfer that ends while streaming tells the end too.
	r = &chunkReader{chunks: [][]byte{chunk(smallCopy, 'a'), chunk(bigCopy, 'b')}}
	st = &streamLog{r: r}
	if err := copyConn(&out, r, st); err != nil {
		t.Fatal(err)
	}
	if want := []string{"begin after 1 reads", "end after 3 reads"}; !slices.Equal(st.log, want) {
		t.Errorf("a transfer to the end: streams told %q, want %q", st.log, want)
	}
}

// streamLog records Begin and End with how many reads r had by then.
type streamLog struct {
	r   *chunkReader
	log []string
}

func (s *streamLog) Begin() {
	s.log = append(s.log, fmt.Sprintf("begin after %d reads", len(s.r.sizes)))
}
func (s *streamLog) End() { s.log = append(s.log, fmt.Sprintf("end after %d reads", len(s.r.sizes))) }
