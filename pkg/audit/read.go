package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// ErrNoStream is returned by Read when the server has no audit stream: no
// dispatcher that keeps one has applied streams/ there.
var ErrNoStream = errors.New("audit: no audit stream")

// Query selects the records Read delivers; its zero value selects all.
type Query struct {
	Kind  string    // job.AuditJob or job.AuditAdmin; empty for both
	Model string    // a canonical model name; empty for any
	Since time.Time // only records the stream stored at or after this; zero for all
}

// Read delivers the records q selects to fn, oldest first, filtering by
// subject on the server. It delivers only what the stream held when Read
// began, so it ends on a busy stream too, and returns once fn had the last
// of those, or with fn's error, which stops it. Messages that are not
// records of q's kind are skipped and counted. It blocks until then or
// until ctx ends.
func Read(ctx context.Context, js jetstream.JetStream, q Query, fn func(Record) error) (skipped int, err error) {
	s, err := js.Stream(ctx, job.AuditStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, ErrNoStream
	}
	if err != nil {
		return 0, fmt.Errorf("audit: look up %s: %w", job.AuditStream, err)
	}
	last := s.CachedInfo().State.LastSeq
	if s.CachedInfo().State.Msgs == 0 {
		return 0, nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{job.AuditFilter(q.Kind, q.Model)}, MaxResetAttempts: 5}
	if !q.Since.IsZero() {
		since := q.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := js.OrderedConsumer(ctx, job.AuditStream, cfg)
	if err != nil {
		return 0, fmt.Errorf("audit: read %s: %w", job.AuditStream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, fmt.Errorf("audit: read %s: %w", job.AuditStream, err)
	}
	defer it.Stop()
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		return 0, nil
	}
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return skipped, fmt.Errorf("audit: read %s: %w", job.AuditStream, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return skipped, fmt.Errorf("audit: read %s: %w", job.AuditStream, err)
		}
		if md.Sequence.Stream > last {
			return skipped, nil // Stored after Read began.
		}
		var r Record
		if json.Unmarshal(m.Data(), &r) == nil {
			// The subject says the kind: a worker may write only job
			// records there, whatever its record claims.
			r.Kind = subjectKind(m.Subject())
		}
		if r.Kind == "" || q.Kind != "" && r.Kind != q.Kind {
			skipped++
		} else if err := fn(r); err != nil {
			return skipped, err
		}
		if md.NumPending == 0 || md.Sequence.Stream == last {
			return skipped, nil
		}
	}
}

// subjectKind is the kind token of an audit subject,
// ollamaq.audit.<kind>.<model>.<requester>.
func subjectKind(subject string) string {
	rest, ok := strings.CutPrefix(subject, job.AuditPrefix+".")
	if !ok {
		return ""
	}
	kind, _, _ := strings.Cut(rest, ".")
	return kind
}
