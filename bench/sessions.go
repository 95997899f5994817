package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// sessionParams shape the sessions scenario.
type sessionParams struct {
	sims      int           // simulators
	slots     int           // --parallel and --slots
	sessions  int           // conversations at once, each a closed loop
	turns     int           // turns per conversation
	docWords  int           // words of the first message, unique to each conversation
	userWords int           // words of every later user message
	tokens    int           // tokens per answer
	tps       float64       // tokens/s per stream
	promptTPS float64       // prompt tokens evaluated per second (--prompt-tps)
	ttft      time.Duration // --ttft, on top of prompt evaluation
	cache     int           // --prompt-cache: prompts each simulator keeps
	think     time.Duration // between an answer and the next turn
}

// sessionTurn is what a client saw of one turn.
type sessionTurn struct {
	turn int // from 1
	ttft time.Duration
	ok   bool
}

// runSessions runs the same multi-turn conversations (each turn sends the
// history, the previous answer and a new message) through OllamaMax with
// session affinity, OllamaMax with it off (--affinity-wait 0, the policy
// before) and nginx least_conn over simulators whose prompt cache makes a
// turn on the worker of the previous one start sooner, and compares the
// time to first token of turns 2 and later.
func runSessions(ctx context.Context, l *lab, p params, s *section) error {
	sp := p.sessions
	const model = "llama3.2"
	s.design = []string{fmt.Sprintf(
		"%d simulated Ollamas (`--parallel %d`, %g tokens/s per stream, `--prompt-tps %g`: prompt tokens not in the "+
			"cache cost %s each, on top of `--ttft %s`; `--prompt-cache %d` prompts kept per simulator), with %s loaded "+
			"on each before each system's run. %d conversations at once, each a closed loop of %d turns over streamed "+
			"`/api/chat`: the first message is %d words unique to the conversation (a document, an agent's context); "+
			"each later turn sends the whole history, the previous answer (%d tokens) and a new message of %d words, "+
			"%s after the answer ended. No session header: OllamaMax finds the conversation by its history. The same "+
			"conversations (new words for each system, so no cache carries over) go to OllamaMax with session affinity "+
			"(the worker's default `--affinity-wait %s`), to OllamaMax with it off (`--affinity-wait 0`, the policy "+
			"before), and to nginx `least_conn` in front of the same simulators. Time to first token runs from sending "+
			"a turn to its first NDJSON line.",
		sp.sims, sp.slots, sp.tps, sp.promptTPS, time.Duration(float64(time.Second)/sp.promptTPS), sp.ttft, sp.cache,
		model, sp.sessions, sp.turns, sp.docWords, sp.tokens, sp.userWords, sp.think, affinityWaitDefault)}

	sims := make([]*simProc, sp.sims)
	for i := range sims {
		var err error
		if sims[i], err = l.startSim(ctx, fmt.Sprintf("sessions-sim%d", i), simOpts{models: model, tps: sp.tps, ttft: sp.ttft,
			parallel: sp.slots, tokens: sp.tokens, seed: int64(i + 1), maxQueue: 4096,
			extra: []string{"--prompt-tps", fmt.Sprint(sp.promptTPS), "--prompt-cache", fmt.Sprint(sp.cache)}}); err != nil {
			return err
		}
	}
	type system struct {
		name  string
		url   string
		ready func() bool // the workers' records show the model loaded
	}
	var systems []system
	fleetOf := func(name, title string, workerFlags ...string) error {
		d, err := l.startDispatcher(ctx, "sessions-"+name+"-dispatcher")
		if err != nil {
			return err
		}
		ids := make([]string, len(sims))
		for i, sim := range sims {
			ids[i] = fmt.Sprintf("sessions-%s-%d", name, i)
			if _, err := l.startWorker(ctx, d, ids[i], sim, sp.slots, workerFlags...); err != nil {
				return err
			}
		}
		m, _ := job.CanonicalModel(model)
		systems = append(systems, system{name: title, url: d.url, ready: func() bool {
			for _, id := range ids {
				n, err := d.node(ctx, id)
				if err != nil || n == nil || !n.IsLoaded(m) {
					return false
				}
			}
			return true
		}})
		return nil
	}
	if !l.hasFlag("worker", "affinity-wait") {
		s.notef("These binaries' worker has no `--affinity-wait`: session affinity was not measured.")
		if err := fleetOf("today", "OllamaMax, today's policy"); err != nil {
			return err
		}
	} else {
		if err := fleetOf("affinity", "OllamaMax, session affinity"); err != nil {
			return err
		}
		if err := fleetOf("today", "OllamaMax, today's policy", "--affinity-wait", "0"); err != nil {
			return err
		}
	}
	lcURL, err := l.leastConn(ctx, s, "sessions", sims)
	if err != nil {
		return err
	}
	if lcURL != "" {
		systems = append(systems, system{name: "nginx least_conn", url: lcURL})
	}

	c := newHTTPClient(256)
	t := table{caption: "Results", header: []string{"system", "turns completed", "turn 1 TTFT p50", "turn 1 TTFT p99",
		"turns 2+ TTFT p50", "turns 2+ TTFT p99", "turns 2+ p50 ÷ today's"}}
	type row struct {
		done, all    int
		first, later sample
	}
	rows := make([]row, len(systems))
	today := -1
	for k, sys := range systems {
		if strings.Contains(sys.name, "today") {
			today = k
		}
		for i, sim := range sims {
			if _, fails := split([]result{do(ctx, c, sim.url+"/api/generate", []byte(`{"model":"`+model+`","prompt":""}`),
				time.Time{}, streamOpts{})}); fails != "" {
				return fmt.Errorf("load %s on simulator %d: %s", model, i, fails)
			}
		}
		if sys.ready != nil {
			if err := waitUntil(ctx, nil, 15*time.Second, sys.name+"'s records to show the model loaded", sys.ready); err != nil {
				return err
			}
		}
		fmt.Fprintf(l.progress, "   %s: %d conversations of %d turns\n", sys.name, sp.sessions, sp.turns)
		turns := make([][]sessionTurn, sp.sessions)
		var wg sync.WaitGroup
		for i := range sp.sessions {
			wg.Go(func() { turns[i] = converse(ctx, c, sys.url, model, fmt.Sprintf("c%d%d", k, i), sp) })
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return err
		}
		var first, later []float64
		var r row
		for _, conv := range turns {
			for _, tr := range conv {
				r.all++
				v := math.Inf(1)
				if tr.ok {
					r.done++
					v = tr.ttft.Seconds()
				}
				if tr.turn == 1 {
					first = append(first, v)
				} else {
					later = append(later, v)
				}
			}
			r.all += sp.turns - len(conv) // Turns never sent after a failed one.
		}
		r.first, r.later = newSample(first), newSample(later)
		rows[k] = r
	}
	for k, sys := range systems {
		r := rows[k]
		rel := "—"
		if today >= 0 && k != today {
			rel = fmt.Sprintf("%.2f", r.later.p50()/rows[today].later.p50())
		}
		t.rows = append(t.rows, []string{sys.name, fmt.Sprintf("%d of %d", r.done, r.all), secs(r.first.p50()), secs(r.first.p99()),
			secs(r.later.p50()), secs(r.later.p99()), rel})
	}
	s.addTable(t)
	if today > 0 {
		s.notef("Done when: turns 2+ TTFT p50 with session affinity ÷ with it off = %.2f (want ≤ 0.5).",
			rows[0].later.p50()/rows[today].later.p50())
	}
	s.notef("\"÷ today's\": the system's figure divided by OllamaMax's with session affinity off. A turn whose " +
		"history is in its simulator's cache evaluates only the new words; one that lands elsewhere evaluates the " +
		"whole conversation, or what of it that simulator still holds from an older turn.")
	return nil
}

// affinityWaitDefault is the worker's default --affinity-wait, as the
// design line states it.
const affinityWaitDefault = "500ms"

// converse runs one conversation of sp.turns turns and returns what each
// turn saw, up to the first that failed.
func converse(ctx context.Context, c *http.Client, base, model, tag string, sp sessionParams) []sessionTurn {
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	words := func(n int, what string) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "%s%s%d ", tag, what, i)
		}
		return b.String()
	}
	msgs := []message{{Role: "user", Content: words(sp.docWords, "d")}}
	var out []sessionTurn
	for turn := 1; turn <= sp.turns && ctx.Err() == nil; turn++ {
		body, _ := json.Marshal(map[string]any{"model": model, "messages": msgs}) // Always marshals.
		tr, answer := chatTurn(ctx, c, base+"/api/chat", body)
		tr.turn = turn
		out = append(out, tr)
		if !tr.ok {
			return out
		}
		msgs = append(msgs, message{Role: "assistant", Content: answer}, message{Role: "user", Content: words(sp.userWords, fmt.Sprintf("u%d_", turn))})
		select {
		case <-ctx.Done():
		case <-time.After(sp.think):
		}
	}
	return out
}

// chatTurn sends one streamed chat request and returns its time to first
// line and the answer's text.
func chatTurn(ctx context.Context, c *http.Client, url string, body []byte) (sessionTurn, string) {
	var tr sessionTurn
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return tr, ""
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return tr, ""
	}
	defer func() { _ = resp.Body.Close() }() // Read to the end below; nothing to lose.
	if resp.StatusCode != http.StatusOK {
		return tr, ""
	}
	var answer strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if tr.ttft == 0 {
			tr.ttft = time.Since(start)
		}
		var line struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			Done  bool   `json:"done"`
			Error string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Error != "" {
			return tr, ""
		}
		answer.WriteString(line.Message.Content)
		if line.Done {
			tr.ok = true
			return tr, answer.String()
		}
	}
	return tr, ""
}
