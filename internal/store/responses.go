package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// responsesSchema records what was done about incidents beyond the answers
// to the mail servers (sessions kicked, queued mail held, people told), and
// which queued messages are on hold for which account, so that an unlock
// can release or purge exactly those, even after a restart.
const responsesSchema = `
CREATE TABLE IF NOT EXISTS responses (
	id          INTEGER PRIMARY KEY,
	incident_id INTEGER NOT NULL,   -- 0: an admin's action without an incident
	account     TEXT NOT NULL,
	at          INTEGER NOT NULL,   -- unix ms
	kind        TEXT NOT NULL,      -- kick, hold, release, purge, notify
	dry_run     INTEGER NOT NULL,   -- 1: what would have been done
	ok          INTEGER NOT NULL,
	detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_incident ON responses(incident_id);
CREATE TABLE IF NOT EXISTS held (
	mta         TEXT NOT NULL,      -- postfix, exim
	queue_id    TEXT NOT NULL,
	account     TEXT NOT NULL,
	held_at     INTEGER NOT NULL,
	incident_id INTEGER NOT NULL,
	PRIMARY KEY (mta, queue_id)
);
CREATE INDEX IF NOT EXISTS held_account ON held(account);
`

// Response is one thing done (or, in dry-run, that would have been done)
// about an incident.
type Response struct {
	IncidentID int64     `json:"incident_id,omitempty"`
	Account    string    `json:"account,omitempty"`
	At         time.Time `json:"at"`
	Kind       string    `json:"kind"`
	DryRun     bool      `json:"dry_run,omitempty"`
	OK         bool      `json:"ok"`
	Detail     string    `json:"detail"`
}

// AddResponse records a response and audits it.
func (s *Store) AddResponse(ctx context.Context, r Response) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO responses(incident_id, account, at, kind, dry_run, ok, detail) VALUES(?,?,?,?,?,?,?)`,
			r.IncidentID, r.Account, ms(r.At), r.Kind, r.DryRun, r.OK, r.Detail); err != nil {
			return err
		}
		what := r.Detail
		if r.DryRun {
			what = "dry run, would: " + what
		}
		if r.IncidentID > 0 {
			what += fmt.Sprintf(" (incident %d)", r.IncidentID)
		}
		return audit(ctx, tx, r.At, "mailwarden", r.Kind, r.Account, what)
	})
}

// Responses returns the responses to the given incidents, oldest first,
// grouped by incident id.
func (s *Store) Responses(ctx context.Context, incidentIDs []int64) (map[int64][]Response, error) {
	out := map[int64][]Response{}
	for len(incidentIDs) > 0 {
		n := min(len(incidentIDs), 500)
		args := make([]any, n)
		for i, id := range incidentIDs[:n] {
			args[i] = id
		}
		incidentIDs = incidentIDs[n:]
		rows, err := s.db.QueryContext(ctx, `SELECT incident_id, account, at, kind, dry_run, ok, detail FROM responses WHERE incident_id IN (?`+strings.Repeat(",?", n-1)+`) ORDER BY id`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var r Response
			var at int64
			if err := rows.Scan(&r.IncidentID, &r.Account, &at, &r.Kind, &r.DryRun, &r.OK, &r.Detail); err != nil {
				rows.Close()
				return nil, err
			}
			r.At = fromMS(at)
			out[r.IncidentID] = append(out[r.IncidentID], r)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PutHeld records queued messages of an account that were put on hold.
func (s *Store) PutHeld(ctx context.Context, mta, account string, ids []string, at time.Time, incidentID int64) error {
	if len(ids) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO held(mta, queue_id, account, held_at, incident_id) VALUES(?,?,?,?,?)`,
				mta, id, account, ms(at), incidentID); err != nil {
				return err
			}
		}
		return nil
	})
}

// Held returns the queue ids held for an account by one MTA, oldest first.
func (s *Store) Held(ctx context.Context, mta, account string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT queue_id FROM held WHERE mta = ? AND account = ? ORDER BY held_at, queue_id`, mta, account)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// DeleteHeld forgets held queue ids (released or purged).
func (s *Store) DeleteHeld(ctx context.Context, mta string, ids []string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `DELETE FROM held WHERE mta = ? AND queue_id = ?`, mta, id); err != nil {
				return err
			}
		}
		return nil
	})
}
