package batch

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Submission knobs. They bound what one Submit holds in memory and how much
// a resumed submission must check again.
const (
	window          = 256              // lines whose publishes are in flight
	windowBytes     = 16 << 20         // and their bodies' bytes
	reserveLines    = 1024             // lines reserved in the record at a time
	checkpointEvery = time.Second      // the record's progress is at most this old
	ackTimeout      = 30 * time.Second // a publish JetStream does not acknowledge by then fails
	headerRoom      = 8 << 10          // the job's headers, within the server's max payload
)

// Source opens the batch file. Submit reads it twice: once to check it, once
// to queue it.
type Source func() (io.ReadCloser, error)

// SubmitOptions adjust Submit.
type SubmitOptions struct {
	// ID names the batch; empty derives it from the file's content, so the
	// same file submitted again is the same batch.
	ID string
	// Name is the input's name, kept in the record (the file name).
	Name string
	// Strict refuses the whole file when a line is not a valid request;
	// otherwise such lines are reported and skipped.
	Strict bool
	// CompletionWindow is how long the batch has to finish, from its
	// creation; 0 takes the window the file's lines ask for, else
	// DefaultCompletionWindow. When it has passed, the lines without a
	// result get the error batch_expired and the batch is expired. A resumed
	// submission keeps the window the batch was created with.
	CompletionWindow time.Duration
	// Report, if set, hears about each line that is not queued, as it is found.
	Report func(*LineError)
	// Progress, if set, is called as the submission advances.
	Progress func(Progress)
}

// Progress is how far Submit got.
type Progress struct {
	ID        string // known once the file was checked
	Checking  bool   // reading the file for the first time
	Lines     int    // lines read (while checking)
	Requests  int    // requests in the file
	Submitted int    // requests queued
}

// Submission is what Submit did.
type Submission struct {
	Record  *Record
	Created bool // a new batch; false when an earlier submission is resumed or was complete
	Queued  int  // jobs this call queued
	Skipped int  // requests an earlier submission had already queued, found again
}

// Submit checks the batch file that open returns and queues each valid line
// as a batch job. It never holds the file in memory: a first pass validates
// the lines, finds repeated custom_ids and hashes the content; a second
// queues the lines, a window at a time.
//
// Nothing is queued when custom_ids repeat (ErrDuplicateIDs), when a strict
// submission finds an invalid line (ErrInvalidLines), or when the file has no
// valid request (ErrEmpty). Submitting a file again, or again after a
// submission was interrupted, queues no line twice: each job's ID derives
// from the batch ID and its custom_id, and the batch's record says which
// lines are queued. When ctx ends, Submit records how far it got and
// returns ctx's error; running it again resumes.
func (c *Client) Submit(ctx context.Context, open Source, o SubmitOptions) (*Submission, error) {
	if o.ID != "" && !ValidID(o.ID) {
		return nil, fmt.Errorf("batch: ID %q must be 1 to 64 letters, digits, '-' or '_'", o.ID)
	}
	if o.CompletionWindow != 0 {
		if err := checkWindow(o.CompletionWindow); err != nil {
			return nil, fmt.Errorf("batch: CompletionWindow: %w", err)
		}
	}
	maxBody := int(c.nc.MaxPayload()) - headerRoom
	sc, err := c.check(ctx, open, maxBody, o)
	if err != nil {
		return nil, err
	}
	id := o.ID
	if id == "" {
		id = idFromDigest(sc.Digest)
	}
	window := cmp.Or(o.CompletionWindow, sc.Window, DefaultCompletionWindow)
	now := c.now().UTC()
	expires := now.Add(window)
	rec := &Record{ID: id, File: o.Name, Digest: hex.EncodeToString(sc.Digest), State: Submitting, Lines: sc.Lines,
		Requests: sc.Requests, Invalid: sc.Invalid, Errors: sc.Errors, Models: sc.Models, NextLine: 1,
		CreatedAt: now, UpdatedAt: now, CompletionWindow: FormatWindow(window), ExpiresAt: &expires}
	created, err := c.create(ctx, rec)
	if err != nil {
		return nil, err
	}
	sub := &Submission{Record: rec, Created: created}
	if !created {
		if rec, _, err = c.get(ctx, id); err != nil {
			return nil, err
		}
		sub.Record = rec
		switch {
		case rec.Digest != hex.EncodeToString(sc.Digest):
			return nil, fmt.Errorf("%w: %s was submitted from another file (%s); choose another ID", ErrConflict, id, rec.File)
		case rec.State == Canceled:
			return sub, fmt.Errorf("%w: %s; submit it under another ID to run it again", ErrCanceled, id)
		case rec.State == Expired || rec.State == Submitting && rec.due(c.now()):
			return sub, fmt.Errorf("%w: %s; submit it under another ID to run it again", ErrExpired, id)
		case rec.State != Submitting:
			sub.Skipped = rec.Requests
			return sub, nil // Complete already: nothing to queue.
		}
	}
	s := &submitter{c: c, id: id, start: *rec, progress: o.Progress, maxBody: maxBody,
		done: rec.Submitted, reserved: rec.Reserved}
	err = s.run(ctx, open)
	sub.Queued, sub.Skipped = s.queued, s.skipped
	if s.rec != nil {
		sub.Record = s.rec
	}
	return sub, err
}

// check reads the file a first time and decides whether to queue it.
func (c *Client) check(ctx context.Context, open Source, maxBody int, o SubmitOptions) (*Scan, error) {
	var lines func(int)
	if o.Progress != nil {
		lines = func(n int) { o.Progress(Progress{Checking: true, Lines: n}) }
	}
	sc, err := Check(ctx, open, maxBody, o.Report, lines)
	if err != nil {
		return nil, err
	}
	switch {
	case sc.Duplicates > 0:
		return nil, fmt.Errorf("%w: %s an earlier line's custom_id; nothing was queued", ErrDuplicateIDs, plural(sc.Duplicates, "line repeats", "lines repeat"))
	case o.Strict && sc.Invalid > 0:
		return nil, fmt.Errorf("%w: %s not a valid request; nothing was queued", ErrInvalidLines,
			plural(sc.Invalid, fmt.Sprintf("of %d lines is", sc.Lines), fmt.Sprintf("of %d lines are", sc.Lines)))
	case sc.Requests == 0:
		return nil, fmt.Errorf("%w; nothing was queued", ErrEmpty)
	case sc.WindowConflict != nil && o.CompletionWindow == 0:
		return nil, fmt.Errorf("%w: %v; nothing was queued", ErrWindows, sc.WindowConflict)
	}
	return sc, nil
}

// plural says "1 line repeats" or "3 lines repeat".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// Check reads a batch file once, as Submit does before it queues anything:
// it validates every line, counts requests per model, finds repeated
// custom_ids and hashes the content, holding a few bytes per request and
// never the file. maxBody bounds a request's body. report, if set, hears
// about each invalid or repeated line as it is found; progress, if set, how
// many lines were read, every few thousand. It stops with ctx's error when
// ctx ends.
func Check(ctx context.Context, open Source, maxBody int, report func(*LineError), progress func(lines int)) (*Scan, error) {
	f, err := open()
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // Read-only.
	return scan(ctxReader{ctx, f}, maxBody, report, progress)
}

// ctxReader is a reader that stops when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// submitter is one run of the second pass.
type submitter struct {
	c        *Client
	id       string
	start    Record // the record as this run found it
	rec      *Record
	progress func(Progress)
	maxBody  int

	inflight []*pending // in line order
	marked   int        // inflight[:marked] have their marker stored and their job published
	bytes    int
	lastLine int // the last line in flight or done; nextLine follows it
	done     int // requests before inflight[0] (or all, when it is empty): queued
	reserved int // no request after this line may be queued yet
	lastSave time.Time
	// lastReport is when progress was last told.
	lastReport time.Time

	queued, skipped int
	jobsInQueue     map[string]bool // job IDs of this batch in the job stream, when needed
}

// pending is one line on its way into the queue: first its marker is stored
// in the results stream, then its job in the job stream.
type pending struct {
	line   int
	marker jetstream.PubAckFuture // nil once stored, or when it already was
	job    jetstream.PubAckFuture // nil until published
	msg    *nats.Msg              // the job, published once the marker is stored
	skip   bool                   // queued by an earlier submission: nothing to publish
}

func (s *submitter) run(ctx context.Context, open Source) error {
	f, err := open()
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // Read-only.
	lr := newLineReader(f, s.maxBody+64<<10)
	// Lines before NextLine are queued: skip them unread.
	for lr.n < s.start.NextLine-1 {
		if _, _, err := lr.next(); err != nil {
			return fmt.Errorf("%w: the file is shorter than the batch's record says", ErrConflict)
		}
	}
	s.lastLine = lr.n
	for {
		if err := ctx.Err(); err != nil {
			return s.stop(ctx, err)
		}
		req, lerr, err := lr.nextRequest(s.maxBody, true)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return s.stop(ctx, fmt.Errorf("read line %d: %w", lr.n+1, err))
		}
		if lerr != nil {
			continue // Reported by the first pass.
		}
		if err := s.add(ctx, lr.n, req); err != nil {
			return s.stop(ctx, err)
		}
	}
	s.lastLine = lr.n
	if err := s.flush(ctx, 0); err != nil {
		return s.stop(ctx, err)
	}
	if hex.EncodeToString(lr.sum.Sum(nil)) != s.start.Digest {
		return s.stop(ctx, errors.New("batch: the file changed while it was being submitted; submit it again"))
	}
	return s.save(ctx, true)
}

// stop ends an interrupted run: it lets the publishes in flight finish and
// records how far the run got, so that the next run resumes there.
func (s *submitter) stop(ctx context.Context, cause error) error {
	if errors.Is(cause, ErrCanceled) || errors.Is(cause, ErrExpired) {
		return cause // Nothing to resume.
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// Whatever the flush leaves in flight stays after NextLine, to be checked
	// by the next run.
	err := errors.Join(s.flush(dctx, 0), s.save(dctx, false))
	if errors.Is(err, ErrCanceled) {
		return fmt.Errorf("%w: %s", ErrCanceled, s.id)
	}
	if err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// add queues one request, unless an earlier submission did.
func (s *submitter) add(ctx context.Context, line int, req Request) error {
	id := JobID(s.id, req.CustomID)
	p := &pending{line: line, msg: s.jobMsg(id, req)}
	markerStored := false
	if line <= s.start.Reserved {
		// An earlier run may have queued this line without recording it.
		marker, queued, err := s.known(ctx, id)
		if err != nil {
			return err
		}
		p.skip, markerStored = queued, marker
	}
	if p.skip {
		s.skipped++
		s.inflight, s.lastLine = append(s.inflight, p), line
		return s.flush(ctx, window)
	}
	if line > s.reserved || time.Since(s.lastSave) >= checkpointEvery {
		s.reserved = max(s.reserved, line+reserveLines)
		if err := s.save(ctx, false); err != nil {
			return err
		}
	}
	if !markerStored {
		f, err := s.c.js.PublishMsgAsync(s.markerMsg(id, line, req), jetstream.WithMsgID(id+"-queued"),
			jetstream.WithExpectStream(ResultsStream))
		if err != nil {
			return fmt.Errorf("queue line %d: %w", line, err)
		}
		p.marker = f
	}
	s.inflight, s.lastLine = append(s.inflight, p), line
	s.bytes += len(p.msg.Data)
	s.queued++
	if err := s.flush(ctx, window); err != nil {
		return err
	}
	if s.progress != nil && time.Since(s.lastReport) >= 100*time.Millisecond {
		s.lastReport = time.Now()
		s.progress(Progress{ID: s.id, Requests: s.start.Requests, Submitted: s.done})
	}
	return nil
}

// known tells whether job id was queued already: it has a marker, and a
// worker answered it or the job stream holds it.
func (s *submitter) known(ctx context.Context, id string) (marker, queued bool, err error) {
	m, err := s.c.results.GetLastMsgForSubject(ctx, ReplySubject(s.id, id))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, false, nil // The marker comes first: no marker, no job.
	case err != nil:
		return false, false, fmt.Errorf("look up job %s: %w", id, err)
	case job.Kind(m.Header.Get(job.HeaderKind)) != KindQueued:
		return true, true, nil // A worker took it.
	}
	if s.jobsInQueue == nil {
		if s.jobsInQueue, err = s.c.queuedJobs(ctx, s.id); err != nil {
			return false, false, err
		}
	}
	return true, s.jobsInQueue[id], nil
}

// queuedJobs returns the IDs of the jobs of batch id that the job stream
// holds, waiting or running. It reads every queued batch job once.
func (c *Client) queuedJobs(ctx context.Context, id string) (map[string]bool, error) {
	out := map[string]bool{}
	filter := job.JobsPrefix + ".*." + string(job.Batch) + ".*"
	for seq := uint64(1); ; {
		m, err := c.jobs.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("scan queued jobs: %w", err)
		}
		if m.Header.Get(HeaderBatch) == id {
			out[m.Header.Get(job.HeaderJob)] = true
		}
		seq = m.Sequence + 1
	}
}

// flush advances the publishes in flight until fewer than keep lines (and at
// most windowBytes) are in flight, or none when keep is 0. A job is
// published once its marker is stored; a line is done once its job is.
func (s *submitter) flush(ctx context.Context, keep int) error {
	for {
		if err := s.sweep(); err != nil {
			return err
		}
		if len(s.inflight) == 0 || len(s.inflight) < keep && s.bytes <= windowBytes {
			return nil
		}
		// Wait for the oldest line's next step. sweep left the head with
		// its marker or its job in flight.
		head := s.inflight[0]
		f := head.job
		if head.marker != nil {
			f = head.marker
		}
		t := time.NewTimer(ackTimeout)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("queue line %d: JetStream did not acknowledge it within %s", head.line, ackTimeout)
		case <-f.Ok():
			t.Stop()
			if err := s.stored(head); err != nil {
				return err
			}
		case err := <-f.Err():
			t.Stop()
			return fmt.Errorf("queue line %d: %w", head.line, err)
		}
	}
}

// sweep takes the acknowledgements that have arrived, without waiting, in
// line order (JetStream acknowledges one publisher's messages to a stream in
// order): it publishes the jobs whose markers are stored, then retires the
// lines whose jobs are stored.
func (s *submitter) sweep() error {
	for ; s.marked < len(s.inflight); s.marked++ {
		p := s.inflight[s.marked]
		if p.marker != nil {
			select {
			case <-p.marker.Ok():
			case err := <-p.marker.Err():
				return fmt.Errorf("queue line %d: %w", p.line, err)
			default:
				goto retire
			}
			p.marker = nil
		}
		if !p.skip {
			if err := s.publish(p); err != nil {
				return err
			}
		}
	}
retire:
	for len(s.inflight) > 0 {
		p := s.inflight[0]
		if !p.skip {
			if p.job == nil {
				return nil
			}
			select {
			case <-p.job.Ok():
			case err := <-p.job.Err():
				return fmt.Errorf("queue line %d: %w", p.line, err)
			default:
				return nil
			}
		}
		s.pop()
	}
	return nil
}

// stored handles the acknowledgement flush waited for on the head line.
func (s *submitter) stored(p *pending) error {
	if p.marker != nil {
		p.marker = nil
		s.marked++ // The head is the first line with a marker in flight.
		return s.publish(p)
	}
	s.pop()
	return nil
}

// publish sends p's job, once its marker is stored. The job carries the end
// of the batch's completion window as its deadline and TTL.
func (s *submitter) publish(p *pending) error {
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(p.msg.Header.Get(job.HeaderJob)), jetstream.WithExpectStream(job.Stream)}
	if s.start.ExpiresAt != nil {
		deadline, ttl, err := jobDeadline(&s.start, s.c.now())
		if err != nil {
			return err
		}
		p.msg.Header.Set(job.HeaderDeadline, deadline.Format(time.RFC3339Nano))
		opts = append(opts, jetstream.WithMsgTTL(ttl))
	}
	f, err := s.c.js.PublishMsgAsync(p.msg, opts...)
	if err != nil {
		return fmt.Errorf("queue line %d: %w", p.line, err)
	}
	p.job = f
	return nil
}

// pop retires the head line: it is queued.
func (s *submitter) pop() {
	p := s.inflight[0]
	s.inflight[0] = nil
	s.inflight = s.inflight[1:]
	s.marked--
	if !p.skip {
		s.bytes -= len(p.msg.Data)
	}
	s.done++
}

// nextLine is the first line that may not be queued yet.
func (s *submitter) nextLine() int {
	if len(s.inflight) > 0 {
		return s.inflight[0].line
	}
	return s.lastLine + 1
}

// save records the run's progress; final marks the batch queued.
func (s *submitter) save(ctx context.Context, final bool) error {
	next, done, reserved := s.nextLine(), s.done, s.reserved
	rec, err := s.c.update(ctx, s.id, func(r *Record) error {
		switch r.State {
		case Canceled:
			return fmt.Errorf("%w: %s", ErrCanceled, s.id)
		case Expired:
			return fmt.Errorf("%w: %s", ErrExpired, s.id)
		}
		if next > r.NextLine {
			r.NextLine, r.Submitted = next, done
		}
		r.Reserved = max(r.Reserved, reserved)
		if final && r.State == Submitting {
			now := s.c.now().UTC()
			r.State, r.SubmittedAt, r.NextLine, r.Submitted = Queued, &now, r.Lines+1, r.Requests
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.rec, s.lastSave = rec, time.Now()
	if s.progress != nil {
		s.progress(Progress{ID: s.id, Requests: rec.Requests, Submitted: rec.Submitted})
	}
	return nil
}

func (s *submitter) jobMsg(id string, req Request) *nats.Msg {
	m := nats.NewMsg(job.JobSubject(req.Model, job.Batch, Requester))
	m.Data = req.Body
	m.Header.Set(job.HeaderJob, id)
	m.Header.Set(job.HeaderRoute, req.Route)
	m.Header.Set(job.HeaderReply, ReplySubject(s.id, id))
	m.Header.Set(HeaderBatch, s.id)
	m.Header.Set(HeaderCustomID, req.CustomID)
	return m
}

// markerInfo is the body of a queued marker.
type markerInfo struct {
	CustomID string `json:"custom_id"`
	Line     int    `json:"line"`
	URL      string `json:"url"`
	Model    string `json:"model"`
}

func (s *submitter) markerMsg(id string, line int, req Request) *nats.Msg {
	m := nats.NewMsg(ReplySubject(s.id, id))
	m.Header.Set(job.HeaderKind, string(KindQueued))
	m.Header.Set(job.HeaderJob, id)
	m.Header.Set(job.HeaderAttempt, "0")
	m.Header.Set(job.HeaderSeq, "0")
	m.Header.Set(HeaderBatch, s.id)
	m.Header.Set(HeaderCustomID, req.CustomID)
	m.Header.Set("Ollamaq-Line", strconv.Itoa(line))
	m.Data, _ = json.Marshal(markerInfo{CustomID: req.CustomID, Line: line, URL: req.Route, Model: req.Model}) // Always marshals.
	return m
}
