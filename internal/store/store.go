// Package store keeps mailwarden's durable facts in one SQLite file (WAL,
// one writer): account locks, address blocks with their offence counts,
// incidents with their evidence, an audit log of every change and who made
// it; and, in append-only files beside it, a journal of recent events from
// which the daemon rebuilds its counters after a restart. An admin can open
// the SQLite file with sqlite3 while the daemon runs.
//
// Locks, blocks and incidents are written before the call returns (they
// survive a crash); journal events are batched by the caller.
//
// It does not decide anything and does not hold hot counters.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/mailwarden/mailwarden/internal/event"
)

const schema = `
CREATE TABLE IF NOT EXISTS locks (
	account     TEXT PRIMARY KEY,
	since       INTEGER NOT NULL,   -- unix ms
	expires     INTEGER,            -- unix ms, NULL: until unlocked
	reason      TEXT NOT NULL,
	actor       TEXT NOT NULL,      -- "mailwarden" or the admin
	incident_id INTEGER
);
CREATE TABLE IF NOT EXISTS blocks (
	net         TEXT PRIMARY KEY,   -- address, IPv6 as its /64
	ip          TEXT NOT NULL,      -- the address that offended last
	since       INTEGER NOT NULL,
	until       INTEGER NOT NULL,
	offence     INTEGER NOT NULL,   -- repeat offences escalate
	reason      TEXT NOT NULL,
	actor       TEXT NOT NULL,
	incident_id INTEGER
);
CREATE TABLE IF NOT EXISTS incidents (
	id          INTEGER PRIMARY KEY,
	detected_at INTEGER NOT NULL,
	detector    TEXT NOT NULL,
	account     TEXT NOT NULL,
	ip          TEXT NOT NULL,
	action      TEXT NOT NULL,
	dry_run     INTEGER NOT NULL,
	node        TEXT NOT NULL,
	evidence    TEXT NOT NULL       -- JSON
);
CREATE INDEX IF NOT EXISTS incidents_account ON incidents(account, detected_at);
CREATE TABLE IF NOT EXISTS audit (
	id      INTEGER PRIMARY KEY,
	at      INTEGER NOT NULL,
	actor   TEXT NOT NULL,
	action  TEXT NOT NULL,          -- lock, unlock, block, unblock, incident
	target  TEXT NOT NULL,
	reason  TEXT NOT NULL
);
-- The event journal is kept in files beside this one (journal.go).
DROP TABLE IF EXISTS journal;

`

// Store is the durable state. It is safe for concurrent use (SQLite
// serialises writers; the pool holds one connection).
type Store struct {
	db   *sql.DB
	path string
	j    *journal
}

// Open opens or creates the state file dir/mailwarden.db (directory 0700,
// file 0600).
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	path := filepath.Join(dir, "mailwarden.db")
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600); err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	} else {
		f.Close()
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(ON)")
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	for _, sc := range []string{schema, responsesSchema, historySchema} {
		if _, err := db.Exec(sc); err != nil {
			db.Close()
			return nil, fmt.Errorf("state file %s: %w", path, err)
		}
	}
	j, err := openJournal(dir)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db, path: path, j: j}, nil
}

// Path returns the state file's path.
func (s *Store) Path() string { return s.path }

// Close closes the file.
func (s *Store) Close() error {
	s.j.close()
	return s.db.Close()
}

func ms(t time.Time) int64 { return t.UnixMilli() }
func fromMS(v int64) time.Time {
	return time.UnixMilli(v).UTC()
}

// Incident is a stored incident.
type Incident struct {
	ID         int64          `json:"id"`
	DetectedAt time.Time      `json:"detected_at"`
	Detector   string         `json:"detector"`
	Account    string         `json:"account"`
	IP         string         `json:"ip"`
	Action     string         `json:"action"`
	DryRun     bool           `json:"dry_run,omitempty"`
	Node       string         `json:"node,omitempty"`
	Evidence   map[string]any `json:"evidence"`
	Responses  []Response     `json:"responses,omitempty"` // what was done about it
}

// AddIncident stores an incident and its audit line, returning its id.
func (s *Store) AddIncident(ctx context.Context, in *Incident) (int64, error) {
	ev, err := json.Marshal(in.Evidence)
	if err != nil {
		return 0, fmt.Errorf("incident evidence: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `INSERT INTO incidents(detected_at, detector, account, ip, action, dry_run, node, evidence) VALUES(?,?,?,?,?,?,?,?)`,
		ms(in.DetectedAt), in.Detector, in.Account, in.IP, in.Action, in.DryRun, in.Node, string(ev))
	if err != nil {
		return 0, err
	}
	id, _ := res.LastInsertId()
	target := in.Account
	if target == "" {
		target = in.IP
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit(at, actor, action, target, reason) VALUES(?,?,?,?,?)`,
		ms(in.DetectedAt), "mailwarden", "incident", target, fmt.Sprintf("%s → %s (incident %d)", in.Detector, in.Action, id)); err != nil {
		return 0, err
	}
	return id, tx.Commit()
}

// Incidents returns the newest incidents first, for one account or all.
func (s *Store) Incidents(ctx context.Context, account string, limit int) ([]Incident, error) {
	q := `SELECT id, detected_at, detector, account, ip, action, dry_run, node, evidence FROM incidents`
	args := []any{}
	if account != "" {
		q += ` WHERE account = ?`
		args = append(args, account)
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Incident
	for rows.Next() {
		var in Incident
		var at int64
		var ev string
		if err := rows.Scan(&in.ID, &at, &in.Detector, &in.Account, &in.IP, &in.Action, &in.DryRun, &in.Node, &ev); err != nil {
			return nil, err
		}
		in.DetectedAt = fromMS(at)
		if err := json.Unmarshal([]byte(ev), &in.Evidence); err != nil {
			in.Evidence = map[string]any{"unreadable": ev}
		}
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	ids := make([]int64, len(out))
	for i := range out {
		ids[i] = out[i].ID
	}
	rs, err := s.Responses(ctx, ids)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Responses = rs[out[i].ID]
	}
	return out, nil
}

// Lock is a stored account lock.
type Lock struct {
	Account    string    `json:"account"`
	Since      time.Time `json:"since"`
	Expires    time.Time `json:"expires,omitzero"`
	Reason     string    `json:"reason"`
	Actor      string    `json:"actor"`
	IncidentID int64     `json:"incident_id,omitempty"`
}

// PutLock stores (or replaces) a lock and audits it.
func (s *Store) PutLock(ctx context.Context, l Lock) error {
	var exp any
	if !l.Expires.IsZero() {
		exp = ms(l.Expires)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO locks(account, since, expires, reason, actor, incident_id) VALUES(?,?,?,?,?,?)`,
			l.Account, ms(l.Since), exp, l.Reason, l.Actor, l.IncidentID); err != nil {
			return err
		}
		return audit(ctx, tx, l.Since, l.Actor, "lock", l.Account, l.Reason)
	})
}

// DeleteLock removes a lock and audits who did it and why. It reports
// whether there was one.
func (s *Store) DeleteLock(ctx context.Context, account, actor, reason string, at time.Time) (bool, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM locks WHERE account = ?`, account)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return audit(ctx, tx, at, actor, "unlock", account, reason)
	})
	return n > 0, err
}

// Locks returns every lock.
func (s *Store) Locks(ctx context.Context) ([]Lock, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT account, since, expires, reason, actor, incident_id FROM locks ORDER BY since`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Lock
	for rows.Next() {
		var l Lock
		var since int64
		var exp, inc sql.NullInt64
		if err := rows.Scan(&l.Account, &since, &exp, &l.Reason, &l.Actor, &inc); err != nil {
			return nil, err
		}
		l.Since = fromMS(since)
		if exp.Valid {
			l.Expires = fromMS(exp.Int64)
		}
		l.IncidentID = inc.Int64
		out = append(out, l)
	}
	return out, rows.Err()
}

// Block is a stored address block.
type Block struct {
	Net        string    `json:"net"`
	IP         string    `json:"ip"`
	Since      time.Time `json:"since"`
	Until      time.Time `json:"until"`
	Offence    int       `json:"offence"`
	Reason     string    `json:"reason"`
	Actor      string    `json:"actor"`
	IncidentID int64     `json:"incident_id,omitempty"`
}

// PutBlock stores (or replaces) a block and audits it.
func (s *Store) PutBlock(ctx context.Context, b Block) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO blocks(net, ip, since, until, offence, reason, actor, incident_id) VALUES(?,?,?,?,?,?,?,?)`,
			b.Net, b.IP, ms(b.Since), ms(b.Until), b.Offence, b.Reason, b.Actor, b.IncidentID); err != nil {
			return err
		}
		return audit(ctx, tx, b.Since, b.Actor, "block", b.IP, fmt.Sprintf("%s (until %s, offence %d)", b.Reason, b.Until.Format(time.RFC3339), b.Offence))
	})
}

// EndBlock ends a block now (the offence count is kept for escalation)
// and audits it. It reports whether a block was in force.
func (s *Store) EndBlock(ctx context.Context, net, actor, reason string, at time.Time) (bool, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE blocks SET until = ? WHERE net = ? AND until > ?`, ms(at), net, ms(at))
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return audit(ctx, tx, at, actor, "unblock", net, reason)
	})
	return n > 0, err
}

// Blocks returns the blocks in force at t (all, with expired ones, when
// all is true).
func (s *Store) Blocks(ctx context.Context, t time.Time, all bool) ([]Block, error) {
	q := `SELECT net, ip, since, until, offence, reason, actor, incident_id FROM blocks`
	args := []any{}
	if !all {
		q += ` WHERE until > ?`
		args = append(args, ms(t))
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY since`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Block
	for rows.Next() {
		var b Block
		var since, until int64
		var inc sql.NullInt64
		if err := rows.Scan(&b.Net, &b.IP, &since, &until, &b.Offence, &b.Reason, &b.Actor, &inc); err != nil {
			return nil, err
		}
		b.Since, b.Until, b.IncidentID = fromMS(since), fromMS(until), inc.Int64
		out = append(out, b)
	}
	return out, rows.Err()
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Reason string    `json:"reason"`
}

// Audit returns the newest audit entries first.
func (s *Store) Audit(ctx context.Context, limit int) ([]AuditEntry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT at, actor, action, target, reason FROM audit ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var a AuditEntry
		var at int64
		if err := rows.Scan(&at, &a.Actor, &a.Action, &a.Target, &a.Reason); err != nil {
			return nil, err
		}
		a.At = fromMS(at)
		out = append(out, a)
	}
	return out, rows.Err()
}

func audit(ctx context.Context, tx *sql.Tx, at time.Time, actor, action, target, reason string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO audit(at, actor, action, target, reason) VALUES(?,?,?,?,?)`, ms(at), actor, action, target, reason)
	return err
}

func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// AppendEvents writes a batch of events to the journal.
func (s *Store) AppendEvents(ctx context.Context, evs []event.Event) error {
	return s.j.append(evs, time.Now())
}

// TornJournal is returned by Events after it delivered every intact event
// when some journal segments ended in a torn or corrupt record (a crash
// during a write): the events after it in those segments are lost.
type TornJournal struct{ Segments int }

func (e *TornJournal) Error() string {
	return fmt.Sprintf("journal: %d segment(s) end in a torn or corrupt record; the events after it were skipped", e.Segments)
}

// Events calls f for every journal event at or after since, in time order
// (within each hour's segment).
func (s *Store) Events(ctx context.Context, since time.Time, f func(*event.Event)) error {
	torn, err := s.j.events(ctx, since, f)
	if err == nil && torn > 0 {
		err = &TornJournal{Segments: torn}
	}
	return err
}

// PruneEvents drops the journal's segments whose events are all before t
// and returns how many it dropped.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	return s.j.prune(before)
}
