package batch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"io"
	"time"
)

// maxErrors bounds the invalid lines a batch record keeps; all of them are
// reported while the file is read.
const maxErrors = 20

// lineReader reads a file line by line without holding more than one line,
// and hashes everything it reads.
type lineReader struct {
	r       *bufio.Reader
	max     int // longest line kept; longer lines are reported, not kept
	n       int // number of the line last returned, from 1
	buf     []byte
	sum     hash.Hash
	read    int64
	tooLong bool
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max, sum: sha256.New()}
}

// next returns the next line without its line ending. The slice is valid
// until the next call. tooLong reports a line longer than max, whose bytes
// are not returned. At the end it returns io.EOF.
func (lr *lineReader) next() (line []byte, tooLong bool, err error) {
	lr.buf, lr.tooLong = lr.buf[:0], false
	got := false
	for {
		frag, err := lr.r.ReadSlice('\n')
		if len(frag) > 0 {
			got = true
			lr.sum.Write(frag)
			lr.read += int64(len(frag))
			if !lr.tooLong && len(lr.buf)+len(frag) <= lr.max+2 {
				lr.buf = append(lr.buf, frag...)
			} else {
				lr.tooLong, lr.buf = true, lr.buf[:0]
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if !got {
				return nil, false, io.EOF
			}
		case err != nil:
			return nil, false, err
		}
		break
	}
	lr.n++
	line = bytes.TrimSuffix(lr.buf, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if lr.n == 1 {
		line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // A UTF-8 byte order mark.
	}
	return line, lr.tooLong, nil
}

// nextRequest returns the next line that is not blank, parsed (with its
// body as queued when build is set). A line that does not parse returns its
// *LineError; io.EOF ends the file.
func (lr *lineReader) nextRequest(maxBody int, build bool) (req Request, lerr *LineError, err error) {
	for {
		line, tooLong, err := lr.next()
		if err != nil {
			return Request{}, nil, err
		}
		if tooLong {
			return Request{}, &LineError{Line: lr.n, Msg: fmt.Sprintf("line is longer than %d bytes", lr.max)}, nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue // Blank lines, such as a trailing one, are not requests.
		}
		req, err := parseLine(lr.n, line, maxBody, build)
		if err != nil {
			var le *LineError
			if errors.As(err, &le) {
				return Request{}, le, nil
			}
			return Request{}, nil, err
		}
		return req, nil, nil
	}
}

// Scan is what a first pass over a batch file found.
type Scan struct {
	Digest     []byte         // SHA-256 of the file
	Lines      int            // lines, blank ones included
	Requests   int            // valid request lines: the batch's jobs
	Invalid    int            // lines that are not valid requests
	Duplicates int            // lines whose custom_id an earlier line has
	Errors     []LineError    // the first invalid and duplicate lines
	Models     map[string]int // requests per canonical model
	// Window is the completion window the lines ask for, 0 if none does.
	// WindowConflict is the first line that asks for another one.
	Window         time.Duration
	WindowConflict *LineError
}

// scan reads a batch file once: it validates every line, counts requests
// per model, finds repeated custom_ids and hashes the content. It keeps 16
// bytes per request (a hash of its custom_id and its line), never the file.
// report, if not nil, hears about every bad line as it is found; progress,
// if not nil, hears how many lines were read every few thousand lines.
func scan(r io.Reader, maxBody int, report func(*LineError), progress func(lines int)) (*Scan, error) {
	lr := newLineReader(r, maxBody+64<<10)
	s := &Scan{Models: map[string]int{}}
	seed := maphash.MakeSeed()
	seen := map[uint64]uint32{} // custom_id hash -> first line
	windowLine := 0             // the first line with a completion_window
	note := func(le *LineError) {
		if len(s.Errors) < maxErrors {
			s.Errors = append(s.Errors, *le)
		}
		if report != nil {
			report(le)
		}
	}
	for {
		req, le, err := lr.nextRequest(maxBody, false)
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("read line %d: %w", lr.n+1, err)
		}
		if progress != nil && lr.n%8192 == 0 {
			progress(lr.n)
		}
		if le != nil {
			s.Invalid++
			note(le)
			continue
		}
		h := maphash.String(seed, req.CustomID)
		if first, dup := seen[h]; dup {
			s.Duplicates++
			note(&LineError{Line: lr.n, CustomID: req.CustomID, Msg: fmt.Sprintf("custom_id repeats line %d", first)})
			continue
		}
		seen[h] = uint32(lr.n)
		s.Requests++
		s.Models[req.Model]++
		switch {
		case req.Window == 0 || req.Window == s.Window:
		case s.Window == 0:
			s.Window, windowLine = req.Window, lr.n
		case s.WindowConflict == nil:
			s.WindowConflict = &LineError{Line: lr.n, CustomID: req.CustomID,
				Msg: fmt.Sprintf("completion_window %s differs from line %d's %s", FormatWindow(req.Window), windowLine, FormatWindow(s.Window))}
		}
	}
	s.Lines = lr.n
	s.Digest = lr.sum.Sum(nil)
	return s, nil
}
