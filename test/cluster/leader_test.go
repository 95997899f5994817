package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollamamax/ollamamax/internal/fleettest"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// load keeps clients streaming generates through the dispatcher until
// stopped, each one answer after another, and keeps every answer.
type load struct {
	mu      sync.Mutex
	answers []*answer
	done    atomic.Int64
	stop    atomic.Bool
	wg      sync.WaitGroup
}

// run starts clients clients asking for tokens tokens each time.
func (l *load) run(ctx context.Context, base string, clients, tokens int) {
	for c := range clients {
		l.wg.Go(func() {
			for n := 0; !l.stop.Load() && ctx.Err() == nil; n++ {
				a := generate(ctx, base, fmt.Sprintf("client %d asks question %d", c, n), tokens)
				l.mu.Lock()
				l.answers = append(l.answers, a)
				l.mu.Unlock()
				l.done.Add(1)
			}
		})
	}
}

// finish stops the clients after their answers in progress and returns
// every answer.
func (l *load) finish() []*answer {
	l.stop.Store(true)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.answers)
}

// waitAnswers waits until n more answers than now have ended, and at least
// d has passed.
func (l *load) waitAnswers(t *testing.T, n int64, d time.Duration, what string) {
	t.Helper()
	target, until := l.done.Load()+n, time.Now().Add(d)
	fleettest.WaitFor(t, 20*time.Second, fmt.Sprintf("%d answers %s", n, what), func() bool {
		return l.done.Load() >= target && time.Now().After(until)
	})
}

// ackWait is the consumers' ack wait in these tests: how long a job
// delivered to nobody waits before JetStream delivers it again (10 s by
// default, streams/consumer.json).
const ackWait = 2 * time.Second

// silence bounds how long the dispatcher waits for more of a started answer
// (5 minutes by default).
const silence = 3 * time.Second

// TestJobStreamLeaderShutdown streams answers through the dispatcher on a
// three-node cluster while the node that leads the job stream and its
// model's consumer is shut down and, later, started again on the same ports
// and store directory. Every answer must complete with the text of an
// uninterrupted run (none lost, none cut or repeated), and the queue must be
// empty at the end (no job left behind, none dead-lettered). It logs how
// long the clients heard nothing.
//
// In the first case the leader holds no client connection: the shutdown is
// a JetStream failover alone. In the second it also holds the dispatcher's
// connection, and the replies in flight on it are lost. What was in flight
// at the shutdown may end with an explicit error of the kinds made for such
// a loss (a 503 for a publish whose PubAck never came; a 502 for replies
// lost with the dispatcher's connection, and the silence bound's error for
// an answer whose rest was lost whole, in the second case only): the
// test checks that every error is one of those and falls in the fault's
// window, and skips, with the reason, the assertion that they should have
// completed anyway. So it does for an answer that waited a whole ack wait
// for a delivery lost with the consumer's leader.
func TestJobStreamLeaderShutdown(t *testing.T) {
	tests := []struct {
		name    string
		auth    bool
		workers int // worker i connects to node (i+1)%3, the dispatcher to node 0
		node    int // the node shut down, made the leader first
	}{
		{"leader without clients", false, 1, 2},
		{"leader with the dispatcher's connection, auth on", true, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const tokens = 40 // at 400 tokens/s: about 100 ms an answer
			sim := simConfig(400)
			f := fleettest.Start(t, fleettest.Options{Cluster: true, Workers: tt.workers, Slots: 4, Sim: sim, Auth: tt.auth,
				AckWait: ackWait, Silence: silence})
			refs := newReferences(t, sim)
			c := f.Cluster
			consumer := job.ConsumerName(model+":latest", job.Interactive)

			// As many clients as slots: an answer never waits for a free
			// one, so a silence is a stall.
			clients := 4 * tt.workers
			l := &load{}
			l.run(t.Context(), f.URL, clients, tokens)
			l.waitAnswers(t, int64(clients), 0, "before the shutdown") // The workers have made the consumer.
			calm := time.Now()
			c.MoveStreamLeader(f.NC, job.Stream, tt.node)
			c.MoveConsumerLeader(f.NC, job.Stream, consumer, tt.node)
			l.waitAnswers(t, int64(clients), 0, "after moving the leaders")

			down := time.Now()
			c.Shutdown(tt.node)
			next := c.WaitStreamLeader(job.Stream)
			elected := time.Since(down)
			// f.NC is on node 0 with the dispatcher's connection, and
			// reconnects as it does.
			fleettest.WaitFor(t, 10*time.Second, "the test's connection back", f.NC.IsConnected)
			reconnected := time.Now()
			l.waitAnswers(t, 2*int64(clients), time.Second, "with node "+c.Node(tt.node).Name+" down")

			up := time.Now()
			c.Restart(tt.node)
			c.Ready()
			caughtUp := time.Since(up)
			l.waitAnswers(t, int64(clients), 0, "after the restart")
			answers := l.finish()

			// The faults: the leaders' moves and the shutdown, until the
			// dispatcher's connection is back (at once if it was
			// elsewhere), with a second for its subscriptions to reach the
			// other nodes; and the restart, until the node caught up.
			faults := windows{{calm, reconnected.Add(time.Second)}, {up, up.Add(caughtUp + time.Second)}}
			var lostReplies, lostTails, lostPublishes, stalled, undelivered []*answer
			for _, a := range answers {
				why := a.complete(refs.text(a.prompt, tokens))
				switch {
				case why == "":
					if max(a.first, a.gap) >= ackWait {
						stalled = append(stalled, a)
					}
				case tt.node == 0 && lostReply(a) && faults.overlap(a):
					lostReplies = append(lostReplies, a)
				case tt.node == 0 && lostTail(a) && faults.overlap(a):
					lostTails = append(lostTails, a)
				case lostPublish(a) && faults.overlap(a):
					lostPublishes = append(lostPublishes, a)
				case neverStarted(a) && faults.overlap(a):
					undelivered = append(undelivered, a)
				default:
					t.Errorf("%q (asked %s after the shutdown): %s", a.prompt, a.start.Sub(down).Round(time.Millisecond), why)
				}
			}
			t.Logf("%d answers; stream leader %s shut down, %s took over in %s; restarted and caught up in %s",
				len(answers), c.Node(tt.node).Name, c.Node(next).Name, elected.Round(time.Millisecond), caughtUp.Round(time.Millisecond))
			logStalls(t, answers, calm, down, up)

			// Nothing left behind: every job was acknowledged (the work
			// queue removes it) and none was buried.
			for _, stream := range []string{job.Stream, job.DLQStream} {
				fleettest.WaitFor(t, 15*time.Second, stream+" empty", func() bool {
					ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
					defer cancel()
					s, err := f.Queue.JetStream().Stream(ctx, stream)
					return err == nil && s.CachedInfo().State.Msgs == 0
				})
			}
			if t.Failed() {
				return
			}
			var skips []string
			if len(lostReplies) > 0 {
				skips = append(skips, fmt.Sprintf("%d answers ended with 502 %q: core NATS dropped the replies a worker published while the dispatcher "+
					"reconnected to another node, and the requester ends an answer with a gap instead of asking for the rest", len(lostReplies), lostReplies[0].err))
			}
			if len(lostTails) > 0 {
				skips = append(skips, fmt.Sprintf("%d answers ended with %q (the silence bound; 5 minutes by default, so long "+
					"does the client hang): the rest of the answer, done included, was published while the dispatcher's subscription "+
					"was gone, so no later reply showed the requester a gap", len(lostTails), lostTails[0].err))
			}
			if len(lostPublishes) > 0 {
				skips = append(skips, fmt.Sprintf("%d requests got 503 %q after %s: a job published as the stream's leader moved or went, or as the dispatcher's connection went, got no PubAck, "+
					"and the dispatcher gives up instead of publishing again under the same Nats-Msg-Id", len(lostPublishes), lostPublishes[0].err,
					lostPublishes[0].end.Sub(lostPublishes[0].start).Round(100*time.Millisecond)))
			}
			if len(stalled) > 0 {
				first := 0
				for _, a := range stalled {
					if a.first >= ackWait {
						first++
					}
				}
				skips = append(skips, fmt.Sprintf("%d answers were silent for up to %s, the ack wait (%s), %d of them before their first line: "+
					"a job delivered as the consumer's leader went never reached a worker; the requester NAKs a silent job only once "+
					"it has its start, so JetStream delivers it again when the ack wait runs out (10 s by default)", len(stalled), longest(stalled).Round(time.Millisecond), ackWait, first))
			}
			if len(undelivered) > 0 {
				skips = append(skips, fmt.Sprintf("%d requests got 503 %q: a job delivered as the consumer's leader went never reached a worker, "+
					"and the queue wait ran out before the ack wait would have delivered it again", len(undelivered), undelivered[0].err))
			}
			if len(skips) > 0 {
				t.Skip("known limitations (pkg/queue, pkg/worker; not fixed here): " + strings.Join(skips, "; "))
			}
		})
	}
}

// longest is the longest silence of answers.
func longest(answers []*answer) time.Duration {
	var d time.Duration
	for _, a := range answers {
		d = max(d, a.first, a.gap)
	}
	return d
}

// windows are spans of time in which a fault may explain an error.
type windows []struct{ from, to time.Time }

// overlap reports whether a was in flight at some time in one of ws.
func (ws windows) overlap(a *answer) bool {
	for _, w := range ws {
		if !a.start.After(w.to) && !a.end.Before(w.from) {
			return true
		}
	}
	return false
}

// lostReply reports whether a ended with the requester's explicit error for
// replies lost with its connection.
func lostReply(a *answer) bool {
	return (a.status == http.StatusOK || a.status == http.StatusBadGateway) && a.done == 0 && strings.HasPrefix(a.err, "lost reply messages ") &&
		strings.HasSuffix(a.err, "(NATS connection interrupted)")
}

// lostTail reports whether a ended with the dispatcher's error for a
// started answer that went silent.
func lostTail(a *answer) bool {
	return (a.status == http.StatusOK || a.status == http.StatusGatewayTimeout) && a.done == 0 &&
		strings.Contains(a.err, "the worker went silent: nothing for ")
}

// neverStarted reports whether a got the dispatcher's 503 for a job no
// worker started within the queue wait.
func neverStarted(a *answer) bool {
	return a.status == http.StatusServiceUnavailable && strings.Contains(a.err, "no worker took the job within")
}

// lostPublish reports whether a was refused because the dispatcher's
// publish of its job got no PubAck.
func lostPublish(a *answer) bool {
	return a.status == http.StatusServiceUnavailable && strings.Contains(a.err, "queue unavailable: publish job ")
}

// logStalls logs the longest silence each client heard (the time to the
// first line of an answer, or the longest gap between two lines) in calm
// times, for the answers in flight at the shutdown and at the restart, and
// for those asked in the half second after each.
func logStalls(t *testing.T, answers []*answer, calm, down, up time.Time) {
	t.Helper()
	inFlight := func(at time.Time) func(*answer) bool {
		return func(a *answer) bool { return !a.start.After(at) && !a.end.Before(at) }
	}
	askedAfter := func(at time.Time) func(*answer) bool {
		return func(a *answer) bool { return a.start.After(at) && a.start.Before(at.Add(500*time.Millisecond)) }
	}
	windows := []struct {
		name string
		in   func(*answer) bool
	}{
		{"calm", func(a *answer) bool { return a.end.Before(calm) }},
		{"in flight at the shutdown", inFlight(down)},
		{"asked in the 500 ms after it", askedAfter(down)},
		{"in flight at the restart", inFlight(up)},
		{"asked in the 500 ms after it", askedAfter(up)},
	}
	for _, w := range windows {
		var stalls []time.Duration
		for _, a := range answers {
			if w.in(a) {
				stalls = append(stalls, max(a.first, a.gap))
			}
		}
		if len(stalls) == 0 {
			continue
		}
		slices.Sort(stalls)
		t.Logf("%-30s %3d answers: longest silence p50 %s, max %s", w.name, len(stalls),
			stalls[len(stalls)/2].Round(time.Millisecond), stalls[len(stalls)-1].Round(time.Millisecond))
	}
}
