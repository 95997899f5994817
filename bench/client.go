package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// newHTTPClient returns a client that keeps up to conns connections per host
// alive, so that no measurement includes connection set-up after warm-up.
// Direct and proxied paths use the same settings.
func newHTTPClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// generateBody is an /api/generate request. numPredict 0 leaves the answer
// length to the simulator's --tokens.
func generateBody(model, prompt string, numPredict int, stream bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"model":%q,"prompt":%q`, model, prompt)
	if !stream {
		b.WriteString(`,"stream":false`)
	}
	if numPredict > 0 {
		fmt.Fprintf(&b, `,"options":{"num_predict":%d}`, numPredict)
	}
	b.WriteString("}")
	return b.Bytes()
}

// result is what a client saw of one request.
type result struct {
	start   time.Time     // when the request was due (open loop) or sent
	status  int           // HTTP status; 0 if none arrived
	first   time.Time     // first NDJSON line (the first token, or the whole answer)
	end     time.Time     // when the response ended, however it ended
	tokens  int           // token lines (lines before the done line)
	done    bool          // a line with "done":true arrived
	errLine bool          // an {"error":...} line arrived
	err     error         // transport error, including a connection that broke mid-body
	lines   []time.Time   // arrival of every line, when asked for
	ttft    time.Duration // first - start
	total   time.Duration // end - start
}

// ok reports whether the request completed as Ollama would have answered it.
func (r *result) ok() bool {
	return r.status == http.StatusOK && r.done && !r.errLine && r.err == nil
}

// outcome names how the request ended, for failure summaries.
func (r *result) outcome() string {
	switch {
	case r.ok():
		return "completed"
	case r.errLine:
		return `{"error":…} line`
	case r.status != 0 && r.status != http.StatusOK:
		return "HTTP " + strconv.Itoa(r.status)
	case r.err != nil && r.status == 0:
		return "no response: " + shortErr(r.err)
	case r.err != nil:
		return "stream broke: " + shortErr(r.err)
	}
	return "ended without done"
}

// shortErr keeps the interesting end of an error chain.
func shortErr(err error) string {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled by the benchmark"
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err.Error()
	}
	return err.Error()
}

// streamOpts say what to record of a request besides its summary.
type streamOpts struct {
	lines  bool              // keep the arrival time of every line
	onLine func(t time.Time) // called for each token line
}

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

// do POSTs body to url and reads the NDJSON (or single JSON) response line
// by line. start is when the request counts from; a zero start means now.
// It never returns an error: everything that happened is in the result.
func do(ctx context.Context, c *http.Client, url string, body []byte, start time.Time, o streamOpts) (r result) {
	if start.IsZero() {
		start = time.Now()
	}
	r.start = start
	defer func() {
		if r.end.IsZero() {
			r.end = time.Now()
		}
		if !r.first.IsZero() {
			r.ttft = r.first.Sub(r.start)
		}
		r.total = r.end.Sub(r.start)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.status = resp.StatusCode
	br := readers.Get().(*bufio.Reader)
	br.Reset(resp.Body)
	defer func() { br.Reset(nil); readers.Put(br) }()
	for {
		line, err := br.ReadSlice('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			now := time.Now()
			if r.first.IsZero() {
				r.first = now
			}
			if o.lines {
				r.lines = append(r.lines, now)
			}
			switch {
			case bytes.HasPrefix(line, []byte(`{"error"`)):
				r.errLine = true
			case bytes.Contains(line, []byte(`"done":true`)):
				r.done = true
			default:
				r.tokens++
				if o.onLine != nil {
					o.onLine(now)
				}
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			r.end = time.Now()
			return r
		default:
			r.end = time.Now()
			r.err = err
			return r
		}
	}
}

// requestTimeout bounds every request of a closed loop.
const requestTimeout = time.Minute

// closedLoop runs conc clients that each send perClient requests one after
// the other, and returns every result. body makes request i's body.
func closedLoop(ctx context.Context, c *http.Client, url string, conc, perClient int, body func(i int) []byte) []result {
	out := make([]result, conc*perClient)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			for k := range perClient {
				if ctx.Err() != nil {
					return
				}
				i := w*perClient + k
				rctx, cancel := context.WithTimeout(ctx, requestTimeout)
				out[i] = do(rctx, c, url, body(i), time.Time{}, streamOpts{})
				cancel()
			}
		})
	}
	wg.Wait()
	var done []result
	for _, r := range out {
		if !r.start.IsZero() {
			done = append(done, r)
		}
	}
	return done
}

// forDuration runs conc goroutines that call op back to back until d has
// passed, and returns how many calls succeeded, how many failed, the first
// error and the time from start until the last call returned.
func forDuration(ctx context.Context, conc int, d time.Duration, op func(ctx context.Context) error) (ok, failed int, firstErr error, elapsed time.Duration) {
	start := time.Now()
	deadline := start.Add(d)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			n, f := 0, 0
			var e error
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := op(ctx); err != nil {
					f++
					if e == nil {
						e = err
					}
					time.Sleep(10 * time.Millisecond) // No hot loop against a failing path.
					continue
				}
				n++
			}
			mu.Lock()
			ok, failed = ok+n, failed+f
			if firstErr == nil {
				firstErr = e
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return ok, failed, firstErr, time.Since(start)
}

// httpOp is one non-streamed request as an op for forDuration.
func httpOp(c *http.Client, url string, body []byte) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		r := do(ctx, c, url, body, time.Time{}, streamOpts{})
		if !r.ok() {
			return fmt.Errorf("%s: %s", url, r.outcome())
		}
		return nil
	}
}
