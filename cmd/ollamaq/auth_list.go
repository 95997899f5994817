package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ollamamax/ollamamax/pkg/auth"
	"github.com/ollamamax/ollamamax/pkg/job"
)

const authListSynopsis = `Usage: ollamaq auth list [--json]

Lists the credentials the auth directory issued: name, role, account, status
(active, expired, revoked), when they expire, what a client is limited to,
and where the credentials file was written.

Examples:
  ollamaq auth list
  ollamaq auth list --json | jq -r '.[] | select(.status == "active" and .role == "worker") | .name'
`

// userRow is how a user is listed.
type userRow struct {
	*auth.User
	Status string `json:"status"`
}

func cmdAuthList(fs *flag.FlagSet) runFunc {
	dirOf := authDirFlag(fs)
	asJSON := fs.Bool("json", false, "print the users as JSON")
	return func(_ context.Context, e *env, _ []string) int {
		d, code, ok := e.openAuth(dirOf(e))
		if !ok {
			return code
		}
		users, err := d.Users()
		if err != nil {
			return e.authFailed(err)
		}
		rows := make([]userRow, len(users))
		for i, u := range users {
			rows[i] = userRow{User: u, Status: u.Status(e.now())}
		}
		return printList(e, *asJSON, rows, writeUsers, "no users")
	}
}

func writeUsers(w io.Writer, rows []userRow, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tACCOUNT\tSTATUS\tEXPIRES\tLIMITS\tCREDENTIALS")
	for _, r := range rows {
		expires := "never"
		if r.ExpiresAt != nil {
			expires = r.ExpiresAt.Format(time.DateOnly)
			if left := r.ExpiresAt.Sub(now); left > 0 && left < 48*time.Hour {
				expires = "in " + left.Round(time.Minute).String()
			}
		}
		var limits []string
		if r.BatchOnly {
			limits = append(limits, "batch only")
		} else if len(r.Lanes) > 0 {
			limits = append(limits, "lanes "+joinLanes(r.Lanes))
		}
		if len(r.Models) > 0 {
			limits = append(limits, strings.Join(r.Models, ","))
		}
		if len(limits) == 0 {
			limits = []string{"-"}
		}
		creds := r.CredsFile
		if creds == "" {
			creds = "(printed)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Role, r.Account, r.Status, expires, strings.Join(limits, "; "), creds)
	}
	_ = tw.Flush() // Output errors end the command anyway.
}

// joinLanes writes lanes comma-separated.
func joinLanes(lanes []job.Class) string {
	out := make([]string, len(lanes))
	for i, c := range lanes {
		out[i] = string(c)
	}
	return strings.Join(out, ",")
}
