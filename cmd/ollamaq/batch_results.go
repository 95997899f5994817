package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"

	"github.com/ollamamax/ollamamax/pkg/batch"
)

const batchResultsSynopsis = `Usage: ollamaq batch results [--wait] ID

Writes the results of a batch to stdout in the OpenAI Batch API output
format, one line per request, in the order the requests finished:
  {"id": "batch_req_...", "custom_id": "r1",
   "response": {"status_code": 200, "request_id": "...", "body": {...}},
   "error": null}
A request that failed has "error": {"code", "message"} as well, and its
response holds the status and error body; code is batch_cancelled,
invalid_request_error (4xx) or server_error. A request the batch's
completion window left unfinished has "response": null and the code
batch_expired, as OpenAI writes it.

Exit status: 0 when the output is complete, 1 when the batch is not done yet
(the results so far are written), was canceled or expired.

Examples:
  ollamaq batch results batch_0123456789abcdefghijklmn > results.jsonl
  ollamaq batch results --wait nightly | jq -c 'select(.error != null)'
`

func cmdBatchResults(fs *flag.FlagSet) runFunc {
	wait := fs.Bool("wait", false, "wait until the batch is done first, showing progress on stderr")
	return onBatch(fs, func(ctx context.Context, e *env, c *batch.Client, id string) int {
		if *wait {
			if _, err := e.follow(ctx, c, id); err != nil {
				return e.batchFailed(err)
			}
		}
		out := bufio.NewWriterSize(e.stdout, 64<<10)
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		n := 0
		st, err := c.Results(ctx, id, func(r *batch.Result) error {
			n++
			return enc.Encode(r)
		})
		if ferr := out.Flush(); err == nil && ferr != nil {
			return e.fail(exitFailed, "write results: %v", ferr)
		}
		if err != nil {
			return e.batchFailed(err)
		}
		switch {
		case st.State == batch.Canceled:
			return e.fail(exitFailed, "%s was canceled: wrote the %d results it has", id, n)
		case st.State == batch.Expired:
			return e.fail(exitFailed, "%s expired: wrote %d results, %d of them batch_expired", id, n, st.Expired)
		case !st.Complete():
			return e.fail(exitFailed, "%s is not done: wrote %d of %d results (wait with 'ollamaq batch wait %s')", id, n, st.Requests, id)
		}
		if st.Failed > 0 {
			fmt.Fprintf(e.stderr, "%d of %d requests failed; their lines have \"error\" set\n", st.Failed, st.Requests)
		}
		return exitOK
	})
}
