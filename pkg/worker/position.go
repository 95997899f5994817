package worker

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/fleet"
	"github.com/ollamamax/ollamamax/pkg/job"
	"github.com/ollamamax/ollamamax/pkg/queue"
	"github.com/prometheus/client_golang/prometheus"
)

// Queue position reports (docs/protocol.md, "Queue position"). Every
// worker notes the interactive jobs waiting for the models it serves from
// the doorbells it already gets: the stream's header-only republish of
// each stored job carries its sequence, ID, reply subject and deadline.
// Of the live, ready workers that serve a model, the one with the lowest
// ID reports that model's queue: about once a second it asks JetStream for
// the model's consumer (the last stream sequence delivered, how many jobs
// it holds undelivered, how many it delivered), forgets the jobs a worker
// took, and sends each job that waited a second or more since its last
// report a queued reply on its reply subject: its position (the jobs of the
// consumer ahead of it, plus one) and, once the consumer's deliveries were
// measured, an ETA at the rate they came. The others refresh their notes
// every few seconds, so that one of them can take over. Batch jobs get no
// reports, and neither do the jobs beyond the bound of what a worker notes.

const (
	// positionEvery is how often the reporter looks at the queues, and
	// how long a job waits before its first report and between two.
	positionEvery = time.Second
	// positionPrune is how often a worker that does not report refreshes
	// its notes, so that it can take over from the reporter.
	positionPrune = 5 * time.Second
	// maxWaiting bounds the jobs a worker notes; a doorbell beyond it is
	// not noted, and that job gets no reports.
	maxWaiting = 4096
	// reportBudget bounds the reports sent per look, across models: with
	// more jobs waiting, each gets its report less often.
	reportBudget = 1024
	// rateWindow is how far back the consumer's deliveries are measured.
	rateWindow = 30 * time.Second
)

// waitingJob is a job a doorbell announced.
type waitingJob struct {
	seq      uint64
	model    string
	id       string
	key      string // requester.id, as cancels name it
	reply    string // "": noted for its place only, no reports
	stored   time.Time
	deadline time.Time // zero: none
	reported time.Time // the last report sent; zero: none yet
}

// delivered is one look at a consumer's deliveries, for the rate.
type delivered struct {
	at    time.Time
	count uint64
}

// modelQueue is what a worker knows of one model's waiting jobs.
type modelQueue struct {
	jobs     map[uint64]*waitingJob
	taken    uint64      // the last stream sequence this worker pulled: every job up to it was delivered
	overflow bool        // a doorbell was not noted for the bound: some jobs behind are not known
	samples  []delivered // looks at the consumer within rateWindow, oldest first
	looked   time.Time   // the last look at the consumer
	others   bool        // at the last look, another worker reported this queue
}

// waiting is the worker's notes of the jobs waiting for the models it
// serves. ring runs on the doorbells' goroutines; the rest on report's.
type waiting struct {
	max int

	mu     sync.Mutex
	models map[string]*modelQueue
	byKey  map[string]uint64 // requester.id -> seq, for cancels
	n      int

	reports prometheus.Counter
}

func newWaiting(reg prometheus.Registerer, max int) *waiting {
	wt := &waiting{max: max, models: map[string]*modelQueue{}, byKey: map[string]uint64{},
		reports: prometheus.NewCounter(prometheus.CounterOpts{Name: "ollamamax_worker_queued_reports_total",
			Help: "Queued replies (a waiting job's position and ETA) this worker sent as its models' reporter."})}
	reg.MustRegister(wt.reports)
	return wt
}

// ring notes the job a doorbell of an interactive queue announces: only
// the stream's own republish names one (a sequence). Every such job is
// noted, so that the positions of those behind it count it; reports go
// only to a job whose requester asked for them (job.HeaderPositions) and
// whose reply subject is its requester's and not the batch results', as a
// worker would never answer it elsewhere.
func (wt *waiting) ring(m *nats.Msg, now time.Time) {
	if serverHeader(m, jetstream.StreamHeader) != job.Stream {
		return // A ring after a NAK or a hand-back: the job was delivered before.
	}
	seq, err := strconv.ParseUint(serverHeader(m, jetstream.SequenceHeader), 10, 64)
	if err != nil || seq == 0 {
		return
	}
	model, class, requester, err := job.ParseJobSubject(m.Subject)
	if err != nil || class != job.Interactive {
		return
	}
	id, reply := m.Header.Get(job.HeaderJob), m.Header.Get(job.HeaderReply)
	owner, _, rerr := job.ParseReplySubject(reply)
	report := m.Header.Get(job.HeaderPositions) == "1" && rerr == nil && owner == requester &&
		requester != job.BatchRequester && job.ValidToken(id)
	if !report {
		id, reply = "", "" // Noted for its place only.
	}
	j := &waitingJob{seq: seq, model: model, id: id, reply: reply, stored: now}
	if report {
		j.key = requester + "." + id
	}
	if t, err := time.Parse(time.RFC3339Nano, serverHeader(m, "Nats-Time-Stamp")); err == nil && t.Before(now) {
		j.stored = t
	}
	if t, err := time.Parse(time.RFC3339, m.Header.Get(job.HeaderDeadline)); err == nil {
		j.deadline = t
	}
	wt.mu.Lock()
	defer wt.mu.Unlock()
	q := wt.models[model]
	if q == nil {
		q = &modelQueue{jobs: map[uint64]*waitingJob{}}
		wt.models[model] = q
	}
	if _, ok := q.jobs[seq]; ok {
		return
	}
	if wt.n >= wt.max {
		q.overflow = true
		return
	}
	q.jobs[seq] = j
	if j.key != "" {
		wt.byKey[j.key] = seq
	}
	wt.n++
}

// taken notes that this worker pulled the job on subject stored at seq. A
// consumer delivers in stream order, so every job of an interactive queue
// noted up to seq was delivered (to this worker or another): the next look
// forgets them without asking JetStream, and a fleet where no job waits
// costs no call at all.
func (wt *waiting) taken(subject string, seq uint64) {
	model, class, _, err := job.ParseJobSubject(subject)
	if err != nil || class != job.Interactive {
		return // Another consumer's order says nothing of this one's.
	}
	wt.mu.Lock()
	defer wt.mu.Unlock()
	if q := wt.models[model]; q != nil {
		q.taken = max(q.taken, seq)
	}
}

// serverHeader returns the value the stream's republish gave key: the
// last, since it appends its headers to the job's own, and a job may carry
// a forged Nats-Sequence of its own before it.
func serverHeader(m *nats.Msg, key string) string {
	vs := m.Header.Values(key)
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// cancel forgets a job its requester canceled (it also withdraws it).
func (wt *waiting) cancel(requester, id string) {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	key := requester + "." + id
	seq, ok := wt.byKey[key]
	if !ok {
		return
	}
	for _, q := range wt.models {
		if j := q.jobs[seq]; j != nil && j.key == key {
			wt.forgetLocked(q, j)
			return
		}
	}
	delete(wt.byKey, key)
}

// forgetLocked drops j from q. wt.mu is held.
func (wt *waiting) forgetLocked(q *modelQueue, j *waitingJob) {
	delete(q.jobs, j.seq)
	if j.key != "" && wt.byKey[j.key] == j.seq {
		delete(wt.byKey, j.key)
	}
	wt.n--
}

// count returns how many jobs are noted.
func (wt *waiting) count() int {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return wt.n
}

// due returns the models with a job noted that has waited positionEvery
// and that no pull of this worker showed delivered, whose consumer is to be
// looked at now: every positionEvery, or every positionPrune while another
// worker reports the queue. A model not in served is forgotten, and so are
// jobs past their deadline.
func (wt *waiting) due(now time.Time, served map[string]bool) []string {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	var look []string
	for model, q := range wt.models {
		if !served[model] {
			for _, j := range q.jobs {
				wt.forgetLocked(q, j)
			}
			delete(wt.models, model)
			continue
		}
		old := false
		for _, j := range q.jobs {
			switch {
			case j.seq <= q.taken, !j.deadline.IsZero() && now.After(j.deadline):
				wt.forgetLocked(q, j)
			case now.Sub(j.stored) >= positionEvery:
				old = true
			}
		}
		if len(q.jobs) == 0 {
			delete(wt.models, model) // Its overflow is over too: nothing waits that was not noted.
			continue
		}
		every := positionEvery
		if q.others {
			every = positionPrune
		}
		if old && now.Sub(q.looked) >= every-positionEvery/10 {
			look = append(look, model)
		}
	}
	slices.Sort(look)
	return look
}

// position is one report to send.
type position struct {
	reply string
	rep   job.Reply
}

// update applies a look at model's consumer (info) at now: it forgets the
// jobs delivered and, when jobs still wait and reports says this worker
// reports model's queue (known: it could tell; reports must take no lock
// of the worker's), returns the reports due, at most budget, those waiting
// longest for one first.
func (wt *waiting) update(model string, info *jetstream.ConsumerInfo, now time.Time, reports func(model string) (mine, known bool), budget int, worker string) []position {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	q := wt.models[model]
	if q == nil {
		return nil
	}
	q.looked = now
	q.samples = append(q.samples, delivered{now, info.Delivered.Consumer})
	for len(q.samples) > 1 && now.Sub(q.samples[0].at) > rateWindow {
		q.samples = q.samples[1:]
	}
	jobs := make([]*waitingJob, 0, len(q.jobs))
	for _, j := range q.jobs {
		if j.seq <= info.Delivered.Stream {
			wt.forgetLocked(q, j) // A worker took it.
			continue
		}
		jobs = append(jobs, j)
	}
	if len(jobs) == 0 {
		return nil
	}
	mine, known := reports(model)
	if q.others = known && !mine; !mine {
		return nil
	}
	slices.SortFunc(jobs, func(a, b *waitingJob) int { return cmp.Compare(a.seq, b.seq) })
	// Jobs the consumer holds that no doorbell told of were stored before
	// this worker listened, so they are ahead of all it knows; unless
	// the bound left doorbells out, when the unknown ones may be behind.
	ahead := 0
	if pending := int(info.NumPending); pending > len(jobs) && !q.overflow {
		ahead = pending - len(jobs)
	}
	rate := q.rate()
	type due struct {
		j   *waitingJob
		pos int
	}
	var dues []due
	for i, j := range jobs {
		if j.reply == "" || now.Sub(j.stored) < positionEvery || now.Sub(j.reported) < positionEvery-positionEvery/10 {
			continue
		}
		pos := ahead + i + 1
		if pending := int(info.NumPending); pending > 0 {
			pos = min(pos, pending) // Jobs withdrawn unannounced are no longer ahead.
		}
		dues = append(dues, due{j, pos})
	}
	slices.SortStableFunc(dues, func(a, b due) int { return a.j.reported.Compare(b.j.reported) })
	dues = dues[:min(len(dues), budget)]
	out := make([]position, 0, len(dues))
	for _, d := range dues {
		d.j.reported = now
		rep := job.Reply{Kind: job.KindQueued, Job: d.j.id, Position: min(d.pos, job.MaxPosition), Worker: worker}
		if rate > 0 {
			rep.ETA = min(time.Duration(float64(d.pos)/rate*float64(time.Second)), job.MaxETA)
		}
		out = append(out, position{reply: d.j.reply, rep: rep})
	}
	return out
}

// rate returns the consumer's deliveries per second over the samples; 0
// when none were measured.
func (q *modelQueue) rate() float64 {
	if len(q.samples) < 2 {
		return 0
	}
	first, last := q.samples[0], q.samples[len(q.samples)-1]
	el := last.at.Sub(first.at).Seconds()
	if last.count <= first.count || el <= 0 {
		return 0
	}
	return float64(last.count-first.count) / el
}

// reportPositions looks at the waiting jobs' queues every positionEvery
// and sends the reports this worker owes, until ctx is done.
func (w *Worker) reportPositions(ctx context.Context) {
	t := time.NewTicker(positionEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.lookAtQueues(ctx, now)
		}
	}
}

// lookAtQueues is one round of reportPositions.
func (w *Worker) lookAtQueues(ctx context.Context, now time.Time) {
	if w.waiting.count() == 0 {
		return // Nothing noted: no view, no JetStream call.
	}
	served := map[string]bool{}
	w.mu.Lock()
	for k := range w.served {
		if k.class == job.Interactive {
			served[k.model] = true
		}
	}
	w.mu.Unlock()
	look := w.waiting.due(now, served)
	if len(look) == 0 {
		return
	}
	// Asked only once a job waited a second and no pull of this worker
	// showed it taken: the view costs every record of every worker on
	// every heartbeat. A view that is starting gets half a round.
	vctx, cancel := context.WithTimeout(ctx, positionEvery/2)
	view := w.peers.get(vctx)
	cancel()
	pulling := w.pulling()
	reports := func(model string) (mine, known bool) {
		if view == nil {
			return false, false // The view is not ready yet: look again in a second.
		}
		return pulling && w.reportsFor(view, model), true
	}
	budget := reportBudget
	for _, model := range look {
		c := w.consumer(model, job.Interactive)
		if c == nil {
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, positionEvery)
		info, err := c.Info(ictx)
		cancel()
		if err != nil {
			w.log.Debug("consumer info for queue positions", "model", model, "err", err)
			continue
		}
		reps := w.waiting.update(model, info, now, reports, budget, w.cfg.ID)
		budget -= len(reps)
		for _, p := range reps {
			if err := w.nc.PublishMsg(queue.ReplyMsg(p.reply, p.rep)); err != nil {
				w.log.Debug("send queue position", "job", p.rep.Job, "err", err)
				break
			}
			w.waiting.reports.Inc()
		}
	}
}

// reportsFor tells whether this worker reports model's queue: no live,
// ready worker that serves the model has a lower ID in the node view v.
func (w *Worker) reportsFor(v *fleet.View, model string) bool {
	for _, n := range v.Nodes() {
		if n.ID < w.cfg.ID && n.State == fleet.StateReady && n.HasModel(model) {
			return false
		}
	}
	return true
}

// consumer returns the consumer of model and class this worker serves, nil
// when it serves none.
func (w *Worker) consumer(model string, class job.Class) jetstream.Consumer {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.served[consumerKey{model, class}]
}
