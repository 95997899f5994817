package natsnative_test

// This file is the Go example of docs/protocol.md ("A Go client"), verbatim
// between the markers: TestProtocolDocExample checks that the two agree and
// that this file imports nothing of this module but pkg/job.

// example:begin
import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// generate queues an /api/generate job for model and returns the answer.
// requester is this client's token in reply subjects; a real client makes
// it unique, as job.NewID does for job IDs.
func generate(ctx context.Context, nc *nats.Conn, requester, model, prompt string) (string, error) {
	canonical, err := job.CanonicalModel(model)
	if err != nil {
		return "", err
	}
	id := job.NewID()
	reply := job.ReplySubject(requester, id)
	sub, err := nc.SubscribeSync(reply) // Before publishing: replies are core NATS.
	if err != nil {
		return "", err
	}
	defer sub.Unsubscribe()

	body, _ := json.Marshal(map[string]string{"model": model, "prompt": prompt})
	msg := nats.NewMsg(job.JobSubject(canonical, job.Interactive, requester))
	msg.Header.Set(job.HeaderJob, id)
	msg.Header.Set(job.HeaderRoute, "/api/generate")
	msg.Header.Set(job.HeaderReply, reply)
	msg.Data = body
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		return "", err
	}

	var answer strings.Builder
	attempt := 0
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return "", err
		}
		r, err := job.ParseReply(m.Header, m.Data)
		if err != nil || r.Attempt < attempt {
			continue // Not a reply, or one of an attempt that was superseded.
		}
		if r.Attempt > attempt {
			attempt = r.Attempt
			answer.Reset() // A simple client starts over on a redelivery.
		}
		switch r.Kind {
		case job.KindData:
			var chunk struct {
				Response string `json:"response"`
			}
			if err := json.Unmarshal(job.Payload(r.Data), &chunk); err == nil {
				answer.WriteString(chunk.Response)
			}
		case job.KindDone:
			return answer.String(), nil
		case job.KindError:
			return "", fmt.Errorf("%s (status %d)", r.Error, r.Status)
		}
	}
}

// example:end
