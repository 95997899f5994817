package batch

import (
	"crypto/sha256"
	"encoding/base32"

	"github.com/ollamamax/ollamamax/pkg/job"
)

// Names of the batch additions to the protocol (docs/batch.md).
const (
	// HeaderBatch is on every batch job: the batch it belongs to.
	HeaderBatch = job.HeaderBatch
	// HeaderCustomID is on every batch job and its queued marker: the
	// custom_id of its input line.
	HeaderCustomID = job.HeaderCustomID
	// Bucket is the KV bucket of batch records, one key per batch ID.
	Bucket = job.BatchBucket
	// ResultsStream keeps the replies to batch jobs (streams/results.json).
	ResultsStream = job.ResultsStream
	// Requester is the requester token of batch reply and cancel subjects:
	// ollamaq.reply.batch.<batch id>.<job id>, ollamaq.cancel.batch.<job id>.
	Requester = job.BatchRequester
	// KindQueued is the kind of the marker the submitter stores on a job's
	// reply subject before it queues the job: it carries the custom_id and
	// line, and says the job was queued.
	KindQueued = job.KindQueued
)

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// JobID is the job ID of a batch line: a hash of the batch ID and the line's
// custom_id, so that submitting a line again gives the same ID, which is the
// job's Nats-Msg-Id. It has the form of job.NewID.
func JobID(batchID, customID string) string {
	h := sha256.New()
	h.Write([]byte(batchID))
	h.Write([]byte{0})
	h.Write([]byte(customID))
	return idEncoding.EncodeToString(h.Sum(nil)[:16])
}

// idFromDigest is the batch ID derived from the input file's SHA-256, so that
// the same file submitted again is the same batch.
func idFromDigest(sum []byte) string {
	return "batch_" + idEncoding.EncodeToString(sum[:15])
}

// ValidID reports whether id can name a batch: 1 to 64 ASCII letters, digits,
// '-' and '_' (it is a subject token and a KV key).
func ValidID(id string) bool { return job.SafeName(id) }

// ReplySubject is where the replies to a batch job go, and where
// OLLAMAQ_RESULTS keeps them: ollamaq.reply.batch.<batch id>.<job id>.
func ReplySubject(batchID, jobID string) string {
	return job.ReplySubject(Requester+"."+batchID, jobID)
}

// CancelSubject stops a running batch job: ollamaq.cancel.batch.<job id>.
func CancelSubject(jobID string) string {
	return job.CancelSubject(Requester, jobID)
}

// resultsFilter is the subject filter of one batch's results.
func resultsFilter(batchID string) string {
	return job.ReplyPrefix + "." + Requester + "." + batchID + ".>"
}

// jobOfSubject returns the job ID, the last token of a reply subject.
func jobOfSubject(subject string) string {
	_, id, _ := job.ParseReplySubject(subject) // "" for a subject that is not one.
	return id
}
