package auth

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/ollamamax/ollamamax/pkg/job"
)

// Role is what a user may do. Each role of the OLLAMAMAX account has its own
// scoped signing key, whose template holds the role's permissions.
type Role string

// The roles. docs/security.md says why each permission is there.
const (
	// Client is a tenant: it submits jobs under its own requester token (its
	// name), and reads only its own replies, resume requests and PubAcks.
	Client Role = "client"
	// Worker pulls jobs, relays Ollama's answers to any requester, writes
	// only its own node record, reads the others' and takes only its own
	// node commands.
	Worker Role = "worker"
	// Dispatcher is a client for many HTTP users under its own requester
	// token, reads the fleet, sends node commands and applies streams/.
	Dispatcher Role = "dispatcher"
	// Admin may do everything: ollamaq batch, dlq, nodes and queues.
	Admin Role = "admin"
	// Sys is the user of the system account that pushes account JWTs to
	// the servers (revocations). It is not a role of the OLLAMAMAX account.
	Sys Role = "sys"
)

// Roles are the roles of the OLLAMAMAX account, in the order they are documented.
var Roles = []Role{Client, Worker, Dispatcher, Admin}

// ParseRole returns the role named s; sys is not one a user can be given.
func ParseRole(s string) (Role, error) {
	if r := Role(s); slices.Contains(Roles, r) {
		return r, nil
	}
	return "", fmt.Errorf("%w %q: want client, worker, dispatcher or admin", ErrInvalidRole, s)
}

// Tags on a user JWT. The server fills {{tag(model)}} and {{tag(class)}} in
// the client template from a client's tags; role only tells ollamaq what a
// credentials file is for.
const (
	TagRole  = "role"
	TagModel = "model"
	TagClass = "class"
)

// InboxPrefix is the inbox prefix of the user called name
// (nats.CustomInboxPrefix): every role may subscribe only to its own
// inboxes, so nobody reads another's PubAcks or request replies.
func InboxPrefix(name string) string { return "_INBOX_" + name }

// name is the template every role is bound by: the server replaces it with
// the user's name at connect.
const name = "{{name()}}"

func api(s string) string { return "$JS.API." + s }

// nodeKey is the subject of a worker's record in the node bucket.
func nodeKey(id string) string { return "$KV." + job.NodeBucket + ".node." + id }

// The streams streams/ defines, by name: what a process binds (STREAM.INFO)
// or applies (STREAM.CREATE, STREAM.UPDATE).
var streamNames = []string{job.Stream, "KV_" + job.NodeBucket, job.DLQStream, job.AdvisoryStream, job.ResultsStream, "KV_" + job.BatchBucket,
	"KV_" + job.KeyBucket, job.AuditStream, job.LimitsStream, "KV_" + job.ConfigBucket}

// viaLeaf returns the JetStream subjects among subjects as a client of a
// leaf node publishes them: nats-server lets no $JS.API subject of an
// account other than the system account cross a leaf connection, so the
// leaf maps its clients' $JS.API.x to the cluster's JetStream domain,
// $JS.<domain>.API.x, and $KV.x to $JS.<domain>.API.$KV.x
// (deploy/nats/leaf.conf), and the cluster checks the mapped subject. The
// domain is a wildcard: the template does not know the cluster's, and a
// subject of another domain reaches nothing but this account's JetStream.
func viaLeaf(subjects []string) []string {
	var out []string
	for _, s := range subjects {
		if rest, ok := strings.CutPrefix(s, "$JS.API."); ok {
			out = append(out, "$JS.*.API."+rest)
		} else if strings.HasPrefix(s, "$KV.") {
			out = append(out, "$JS.*.API."+s)
		}
	}
	return out
}

// watchConfig is what watching entry of the shared settings bucket takes:
// a KV watch, an ordered push consumer filtered on the entry's subject,
// created anew after a gap and deleted at the end (with "$JS.FC.>").
func watchConfig(entry string) []string {
	return []string{api("CONSUMER.CREATE.KV_" + job.ConfigBucket + ".*.$KV." + job.ConfigBucket + "." + entry),
		api("CONSUMER.DELETE.KV_" + job.ConfigBucket + ".*")}
}

func each(prefix string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n
	}
	return out
}

// Template returns the permissions of role r, as its scoped signing key
// holds them: subjects with {{name()}} (and, for clients, {{tag(model)}}
// and {{tag(class)}}) that the server fills in for each user. Templates are
// written for the job subject layout ollamaq.jobs.<model>.<class>.<requester>
// (docs/protocol.md), whose requester token workers check against the reply
// subject.
func Template(r Role) (jwt.UserPermissionLimits, error) {
	var p jwt.Permissions
	inbox := InboxPrefix(name) + ".>"
	switch r {
	case Client:
		p.Pub.Allow.Add(
			job.JobsPrefix+".{{tag("+TagModel+")}}.{{tag("+TagClass+")}}."+name, // its own jobs, of the models and classes its tags allow
			job.CancelPrefix+"."+name+".*",                                      // cancel its own jobs
			// What queue.Open binds before a submit.
			api("STREAM.INFO."+job.Stream), api("STREAM.INFO.KV_"+job.NodeBucket), api("STREAM.INFO.KV_"+job.BatchBucket))
		// Not ollamaq.reply.batch.>: batch results are the reserved requester
		// batch's, by batch ID, bound to no tenant; ollamaq batch is admin's.
		p.Sub.Allow.Add(
			job.ReplyPrefix+"."+name+".>",  // its own replies
			job.ResumePrefix+"."+name+".>", // workers asking how much of its answer it has
			inbox)
		p.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute} // answer those resume requests
	case Dispatcher:
		p.Pub.Allow.Add(
			job.JobsPrefix+".*.*."+name,
			job.CancelPrefix+"."+name+".*",
			job.NodePrefix+".*",                   // node commands to any worker
			api("CONSUMER.INFO."+job.Stream+".*"), // queue depth, whether a model was ever served
			api("CONSUMER.LIST."+job.Stream),      // the queue metrics
			api("STREAM.MSG.GET."+job.Stream),     // the age of the oldest job, for the metrics
			api("STREAM.MSG.DELETE."+job.Stream),  // withdraw a job its HTTP client abandoned
			// NAK the delivery of a job whose worker fell silent, heartbeats
			// included, so another worker continues it at once
			// (docs/protocol.md, "Heartbeats"). Not for clients: an ack
			// subject names no requester, and ack or term would drop
			// another's job.
			"$JS.ACK."+job.Stream+".>", "$JS.ACK.*.*."+job.Stream+".>",
			job.QueuedPrefix+".*.*."+name, // and ring its doorbell, which a redelivery does not
			// Reading the node bucket: a KV watch is an ordered push consumer,
			// replaced on a gap and deleted at the end, with flow control.
			api("CONSUMER.CREATE.KV_"+job.NodeBucket+".>"), api("CONSUMER.DELETE.KV_"+job.NodeBucket+".*"),
			"$JS.FC.>",
			// HTTP API keys: watch the bucket (as the node bucket), read and
			// create the shared MAC secret; never write a key.
			api("CONSUMER.CREATE.KV_"+job.KeyBucket+".>"), api("CONSUMER.DELETE.KV_"+job.KeyBucket+".*"),
			api("DIRECT.GET.KV_"+job.KeyBucket+".>"), "$KV."+job.KeyBucket+"."+job.KeyMACEntry,
			job.AuditPrefix+".>",      // audit records of management actions and withdrawn jobs
			job.LimitsPrefix+"."+name, // its own rate-limit charges
			// Everyone's charges: an ordered consumer of the limits stream.
			api("CONSUMER.CREATE."+job.LimitsStream+".>"), api("CONSUMER.MSG.NEXT."+job.LimitsStream+".>"),
			api("CONSUMER.DELETE."+job.LimitsStream+".>"))
		p.Pub.Allow.Add(watchConfig(job.ConfigDispatcher)...) // the dispatchers' shared settings; never write them
		// Applying streams/: only streams of those names, never delete or purge.
		p.Pub.Allow.Add(each(api("STREAM.INFO."), streamNames)...)
		p.Pub.Allow.Add(each(api("STREAM.CREATE."), streamNames)...)
		p.Pub.Allow.Add(each(api("STREAM.UPDATE."), streamNames)...)
		p.Sub.Allow.Add(job.ReplyPrefix+"."+name+".>", job.ResumePrefix+"."+name+".>", inbox)
		p.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	case Worker:
		p.Pub.Allow.Add(
			api("CONSUMER.INFO."+job.Stream+".*"),
			api("CONSUMER.CREATE."+job.Stream+".*."+job.JobsPrefix+".*.*.*"), // job consumers only: one model and class each
			api("CONSUMER.MSG.NEXT."+job.Stream+".*"),
			"$JS.ACK.>", // ack, nak, in progress, term; v2 ack subjects put a domain and account hash first
			// The reaper: the shared advisory consumer, then the job it names.
			api("CONSUMER.CREATE."+job.AdvisoryStream+".reaper"), api("CONSUMER.MSG.NEXT."+job.AdvisoryStream+".reaper"),
			api("STREAM.MSG.GET."+job.Stream), api("STREAM.MSG.DELETE."+job.Stream),
			api("DIRECT.GET.KV_"+job.BatchBucket+".>"), // is this job's batch canceled?
			job.ReplyPrefix+".>",                       // answer any requester
			job.ResumePrefix+".>",                      // ask any requester how much it has
			job.DLQPrefix+".>",                         // bury jobs
			job.AuditPrefix+"."+job.AuditJob+".>",      // the audit record of each job it ends
			nodeKey(name),                              // its own node record only
			// A job its Ollama lacks the route of goes back to the queue
			// for another worker: it reads the others' records (a KV
			// watch, as the dispatcher's) and rings the model's doorbell.
			api("CONSUMER.CREATE.KV_"+job.NodeBucket+".>"), api("CONSUMER.DELETE.KV_"+job.NodeBucket+".*"), "$JS.FC.>",
			job.QueuedPrefix+".>")
		p.Pub.Allow.Add(watchConfig(job.ConfigWorker)...)          // the workers' shared settings; never write them
		p.Pub.Allow.Add(each(api("STREAM.INFO."), streamNames)...) // binding, and checking the definitions
		p.Pub.Allow.Add(viaLeaf(p.Pub.Allow)...)                   // the same from behind a leaf node
		p.Sub.Allow.Add(job.QueuedPrefix+".>", job.CancelPrefix+".>", job.NodePrefix+"."+name, inbox)
	case Admin:
		p.Pub.Allow.Add(">")
		p.Sub.Allow.Add(">")
	default:
		return jwt.UserPermissionLimits{}, fmt.Errorf("%w %q", ErrInvalidRole, r)
	}
	return jwt.UserPermissionLimits{Permissions: p, Limits: jwt.Limits{NatsLimits: jwt.NatsLimits{Subs: jwt.NoLimit, Data: jwt.NoLimit, Payload: jwt.NoLimit}}}, nil
}
