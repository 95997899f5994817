package worker

import (
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// DefaultInteractiveReserve is the default of Config.InteractiveReserve:
// one slot kept for interactive jobs on a worker of two slots or more.
const DefaultInteractiveReserve = 1

// reserved returns how many of the slots only interactive jobs may take:
// Config.InteractiveReserve (or what a reload set), but always leaving the
// lower lanes one slot, so that a 1-slot worker reserves nothing and a
// batch still moves on every worker.
func (w *Worker) reserved() int {
	return int(max(min(w.reserve.Load(), w.slots.Load()-1), 0))
}

// lowRoom returns how many more jobs of the lanes below interactive (async,
// batch) may start now: the slots less the reserve, less those such jobs
// already hold. Interactive jobs may take any free slot.
func (w *Worker) lowRoom() int {
	return max(int(w.slots.Load())-w.reserved()-int(w.busyLow.Load()), 0)
}

// lowLane reports whether m is a job of a lane below interactive. A subject
// that does not parse counts as interactive: it is settled as such (run.go)
// and must not hold a lower lane's room.
func lowLane(m jetstream.Msg) bool {
	_, c, _, err := job.ParseJobSubject(m.Subject())
	return err == nil && c != job.Interactive
}
