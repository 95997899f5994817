package main

import "time"

// params are the sizes of every scenario. fullParams fit `make bench` in
// under ten minutes on two cores; shortParams only check the harness.
type params struct {
	scenarioTimeout time.Duration // bound on each scenario, whatever happens

	// Overhead: closed-loop streams at each level, direct and through the queue.
	ovLevels   []int // concurrent streams
	ovRequests []int // requests per path at each level
	ovRounds   int   // the paths alternate this many times per level
	ovSim      simOpts

	// Throughput: non-streamed one-token jobs, closed loop.
	tpConc   int
	tpWindow time.Duration // per path per round
	tpRounds int

	// Streaming relay: many long streams, paced and unpaced.
	relayStreams   int
	relayWindow    time.Duration // per path per round
	relayRounds    int
	relayTPS       float64 // tokens/s per stream of the paced simulator
	relayTokens    int     // tokens per paced answer
	relayMaxTokens int     // tokens per unpaced answer

	// Scheduling: open-loop Poisson arrivals on a mixed fleet.
	schedFleet  []simSpec
	schedLoad   float64       // share of the fleet's nominal capacity offered
	schedDur    time.Duration // arrivals happen during this time
	schedDrain  time.Duration // then requests may finish for this long
	schedTokens [2]int        // answer length, uniform in [min, max]
	schedSeed   uint64

	// Swap: two models on simulators that hold one each, open-loop Poisson.
	swapSims   int           // simulators, half starting with each model
	swapSlots  int           // --parallel and --slots
	swapTPS    float64       // tokens/s per stream
	swapLoad   time.Duration // a model load
	swapRate   float64       // share of the fleet's nominal capacity offered
	swapDur    time.Duration // arrivals happen during this time
	swapDrain  time.Duration // then requests may finish for this long
	swapTokens [2]int        // answer length, uniform in [min, max]

	// Tenants: a quiet tenant's Poisson arrivals beside a flooding tenant.
	tenSims         int
	tenSlots        int           // --parallel and --slots
	tenTPS          float64       // tokens/s per stream
	tenFloodPerSlot int           // the flood's requests in flight per slot of the fleet
	tenFloodTokens  int           // tokens of each flood answer
	tenQuietRate    float64       // the quiet tenant's arrivals per second
	tenQuietDur     time.Duration // its arrivals happen during this time
	tenQuietTokens  int           // tokens of each quiet answer
	tenSettle       time.Duration // from the flood's start to the quiet arrivals'
	tenDrain        time.Duration // then quiet requests may finish for this long
	// Lanes: interactive arrivals while a batch runs.
	lanesSims        int
	lanesSlots       int           // --parallel and --slots
	lanesTPS         float64       // tokens/s per stream
	lanesPromptTPS   float64       // prompt tokens (words) evaluated per second
	lanesLines       int           // lines of the batch
	lanesWords       [2]int        // prompt words per batch line, uniform in [min, max]
	lanesBatchTokens int           // tokens per batch line
	lanesTokens      int           // tokens per interactive request
	lanesRate        float64       // interactive arrivals per second
	lanesDur         time.Duration // interactive arrivals happen during this time
	lanesDrain       time.Duration // then they may finish for this long

	sessions sessionParams

	// Failover: a worker killed mid-stream.
	foStreams    int // streams in flight; half on the worker that is killed
	foTPS        float64
	foTokens     int
	foAckWait    time.Duration
	foKillAfter  time.Duration // after every stream has its first token
	foPromptTTFT time.Duration // prompt time of the "before the first token" case; 0 skips it

	// Memory: many slow streams held open at once.
	memStreams int
	// memWorkerSlots are the slots per worker when one worker with a slot
	// per stream does not serve. (It does not today: a worker fetches up to
	// its free slots at once, and the consumers' max_batch of 256 in
	// streams/consumer.json refuses larger fetches.)
	memWorkerSlots int
	memTPS         float64
	memTokens      int

	// Security: auth and TLS off and on; the throughput sizes, and this
	// many one-stream requests per round for the time to first token.
	secTTFT int

	// Keys: HTTP API keys off and on; the throughput sizes, secTTFT
	// one-stream requests per level per round, and this many rounds.
	keysRounds int

	// Large requests: this many bodies of largeBytes at once beside
	// 2×largeOrdinary streams, on two workers of largeSlots slots.
	largeRequests, largeOrdinary, largeSlots, largeBytes int
}

// simSpec is one simulated Ollama of the mixed fleet.
type simSpec struct {
	name  string
	tps   float64
	ttft  time.Duration
	slots int
}

// service is the mean time one request of meanTokens takes on the spec.
func (s simSpec) service(meanTokens float64) time.Duration {
	return s.ttft + time.Duration(meanTokens/s.tps*float64(time.Second))
}

func fullParams() params {
	return params{
		scenarioTimeout: 4 * time.Minute,

		ovLevels:   []int{1, 16, 64},
		ovRequests: []int{200, 320, 1280},
		ovRounds:   2,
		ovSim:      simOpts{models: "llama3.2", tps: 100, ttft: 50 * time.Millisecond, tokens: 10, parallel: 64, seed: 1},

		tpConc:   64,
		tpWindow: 3 * time.Second,
		tpRounds: 2,

		relayStreams:   64,
		relayWindow:    3 * time.Second,
		relayRounds:    2,
		relayTPS:       100,
		relayTokens:    200,
		relayMaxTokens: 2000,

		schedFleet: []simSpec{
			{"big", 90, 80 * time.Millisecond, 4},
			{"mid", 45, 150 * time.Millisecond, 2},
			{"small", 20, 300 * time.Millisecond, 1},
		},
		schedLoad:   0.85,
		schedDur:    45 * time.Second,
		schedDrain:  15 * time.Second,
		schedTokens: [2]int{20, 100},
		schedSeed:   20260101,

		swapSims:   4,
		swapSlots:  2,
		swapTPS:    100,
		swapLoad:   2 * time.Second,
		swapRate:   0.7,
		swapDur:    10 * time.Second,
		swapDrain:  8 * time.Second,
		swapTokens: [2]int{40, 80},

		tenSims:          4,
		tenSlots:         2,
		tenTPS:           50,
		tenFloodPerSlot:  8,
		tenFloodTokens:   50,
		tenQuietRate:     6,
		tenQuietDur:      6 * time.Second,
		tenQuietTokens:   3,
		tenSettle:        1500 * time.Millisecond,
		tenDrain:         10 * time.Second,
		lanesSims:        4,
		lanesSlots:       8,
		lanesTPS:         400,
		lanesPromptTPS:   100,
		lanesLines:       10000,
		lanesWords:       [2]int{100, 300},
		lanesBatchTokens: 4,
		lanesTokens:      40,
		lanesRate:        10,
		lanesDur:         8 * time.Second,
		lanesDrain:       4 * time.Second,

		sessions: sessionParams{sims: 4, slots: 2, sessions: 8, turns: 8, docWords: 1500, userWords: 40, tokens: 40,
			tps: 200, promptTPS: 2000, ttft: 20 * time.Millisecond, cache: 2, think: 50 * time.Millisecond},

		foStreams:    8,
		foTPS:        50,
		foTokens:     250,
		foAckWait:    10 * time.Second, // the default: failover must not wait for it
		foKillAfter:  time.Second,
		foPromptTTFT: 3 * time.Second,

		memStreams:     1000,
		memWorkerSlots: 250,
		memTPS:         5,
		memTokens:      60,

		secTTFT: 200,

		keysRounds: 3,

		largeRequests: 60,
		largeOrdinary: 8,
		largeSlots:    16,
		largeBytes:    8<<20 - 4096 - 256, // under the dispatcher's --max-body on the default 8 MiB payload
	}
}

func shortParams() params {
	return params{
		scenarioTimeout: 90 * time.Second,

		ovLevels:   []int{1, 8},
		ovRequests: []int{10, 32},
		ovRounds:   1,
		ovSim:      simOpts{models: "llama3.2", tps: 200, ttft: 10 * time.Millisecond, tokens: 5, parallel: 8, seed: 1},

		tpConc:   8,
		tpWindow: 500 * time.Millisecond,
		tpRounds: 1,

		relayStreams:   8,
		relayWindow:    700 * time.Millisecond,
		relayRounds:    1,
		relayTPS:       200,
		relayTokens:    40,
		relayMaxTokens: 200,

		schedFleet: []simSpec{
			{"big", 100, 20 * time.Millisecond, 4},
			{"mid", 50, 40 * time.Millisecond, 2},
			{"small", 25, 80 * time.Millisecond, 1},
		},
		schedLoad:   0.85,
		schedDur:    1500 * time.Millisecond,
		schedDrain:  1500 * time.Millisecond,
		schedTokens: [2]int{5, 15},
		schedSeed:   20260101,

		swapSims:   4,
		swapSlots:  2,
		swapTPS:    200,
		swapLoad:   200 * time.Millisecond,
		swapRate:   0.7,
		swapDur:    1500 * time.Millisecond,
		swapDrain:  2 * time.Second,
		swapTokens: [2]int{5, 15},

		tenSims:          2,
		tenSlots:         2,
		tenTPS:           100,
		tenFloodPerSlot:  4,
		tenFloodTokens:   20,
		tenQuietRate:     10,
		tenQuietDur:      time.Second,
		tenQuietTokens:   2,
		tenSettle:        300 * time.Millisecond,
		tenDrain:         3 * time.Second,
		lanesSims:        2,
		lanesSlots:       3,
		lanesTPS:         400,
		lanesPromptTPS:   200,
		lanesLines:       200,
		lanesWords:       [2]int{20, 60},
		lanesBatchTokens: 4,
		lanesTokens:      10,
		lanesRate:        10,
		lanesDur:         time.Second,
		lanesDrain:       2 * time.Second,

		sessions: sessionParams{sims: 4, slots: 2, sessions: 4, turns: 3, docWords: 200, userWords: 10, tokens: 5,
			tps: 200, promptTPS: 4000, ttft: 10 * time.Millisecond, cache: 4, think: 10 * time.Millisecond},

		foStreams:   4,
		foTPS:       50,
		foTokens:    100,
		foAckWait:   10 * time.Second,
		foKillAfter: 300 * time.Millisecond,

		memStreams:     40,
		memWorkerSlots: 20,
		memTPS:         10,
		memTokens:      40,

		secTTFT: 10,

		keysRounds: 1,

		largeRequests: 6,
		largeOrdinary: 2,
		largeSlots:    4,
		largeBytes:    1 << 20,
	}
}
