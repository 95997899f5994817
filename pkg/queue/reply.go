package queue

import (
	"github.com/nats-io/nats.go"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// ReplyMsg is the message that carries r on subject.
func ReplyMsg(subject string, r job.Reply) *nats.Msg {
	return &nats.Msg{Subject: subject, Header: r.Header(), Data: r.Data}
}
