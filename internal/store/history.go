package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
)

// historySchema keeps 35 days of per-account sending aggregates, daily and
// hourly (the baseline's history), so that a restart or a new install
// (mailwarden analyze --import-history) starts with baselines. Days and
// hours are UTC, numbered since 1970-01-01, and rows name the account by
// a number (the name in every hourly row would triple the file); the
// views history_days_v and history_hours_v show names and dates.
// Rows are only ever merged upwards (the larger count wins, flags are
// or-ed): counts only grow within a day, so a partial copy never
// overwrites a complete one.
const historySchema = `
CREATE TABLE IF NOT EXISTS history_accounts (
	id         INTEGER PRIMARY KEY,
	account    TEXT NOT NULL UNIQUE,
	first_day  INTEGER NOT NULL,     -- the first day a message of the account was seen
	last_day   INTEGER NOT NULL      -- the newest day with a stored row
);
CREATE TABLE IF NOT EXISTS history_days (
	acct       INTEGER NOT NULL,     -- history_accounts.id
	day        INTEGER NOT NULL,     -- days since 1970-01-01 UTC
	messages   INTEGER NOT NULL,
	recipients INTEGER NOT NULL,
	kib        INTEGER NOT NULL,     -- message bytes in KiB
	ips        INTEGER NOT NULL,     -- distinct client addresses (IPv6 per /64), estimated, at most 255
	flags      INTEGER NOT NULL,     -- 1: a detector fired (anomalous), 2: far above usual, not learned
	PRIMARY KEY (acct, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_hours (
	acct       INTEGER NOT NULL,
	hour       INTEGER NOT NULL,     -- hours since 1970-01-01 00:00 UTC
	messages   INTEGER NOT NULL,
	recipients INTEGER NOT NULL,
	kib        INTEGER NOT NULL,
	PRIMARY KEY (acct, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_meta (
	key        TEXT PRIMARY KEY,     -- watermark: unix ms of the newest message the rows count
	value      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS history_days_v AS
	SELECT a.account, date(d.day*86400, 'unixepoch') AS date, d.messages, d.recipients, d.kib*1024 AS bytes, d.ips, d.flags
	FROM history_days d JOIN history_accounts a ON a.id = d.acct;
CREATE VIEW IF NOT EXISTS history_hours_v AS
	SELECT a.account, datetime(h.hour*3600, 'unixepoch') AS hour, h.messages, h.recipients, h.kib*1024 AS bytes
	FROM history_hours h JOIN history_accounts a ON a.id = h.acct;
`

// HistoryDays is how many days of history are kept (older ones are
// pruned): the baseline's 30 days and some.
const HistoryDays = baseline.Days

// PutHistory merges rows into the stored history and raises the watermark
// to upTo (the newest message the rows count; zero: unchanged) once they
// are all written.
func (s *Store) PutHistory(ctx context.Context, rows []baseline.AccountRows, upTo time.Time) error {
	// One transaction per slice of accounts: the state file has one
	// writer, and an incident or a lock (written while a mail server
	// waits) must not wait for 100 000 accounts' rows. The watermark goes
	// with the last slice.
	const slice = 1000
	for len(rows) > slice {
		if err := s.putHistory(ctx, rows[:slice], time.Time{}); err != nil {
			return err
		}
		rows = rows[slice:]
	}
	return s.putHistory(ctx, rows, upTo)
}

func (s *Store) putHistory(ctx context.Context, rows []baseline.AccountRows, upTo time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		acct, err := tx.PrepareContext(ctx, `INSERT INTO history_accounts(account, first_day, last_day) VALUES(?,?,?)
			ON CONFLICT(account) DO UPDATE SET first_day = min(first_day, excluded.first_day), last_day = max(last_day, excluded.last_day)
			RETURNING id`)
		if err != nil {
			return err
		}
		defer acct.Close()
		day, err := tx.PrepareContext(ctx, `INSERT INTO history_days(acct, day, messages, recipients, kib, ips, flags) VALUES(?,?,?,?,?,?,?)
			ON CONFLICT(acct, day) DO UPDATE SET messages = max(messages, excluded.messages), recipients = max(recipients, excluded.recipients),
			kib = max(kib, excluded.kib), ips = max(ips, excluded.ips), flags = flags | excluded.flags`)
		if err != nil {
			return err
		}
		defer day.Close()
		hour, err := tx.PrepareContext(ctx, `INSERT INTO history_hours(acct, hour, messages, recipients, kib) VALUES(?,?,?,?,?)
			ON CONFLICT(acct, hour) DO UPDATE SET messages = max(messages, excluded.messages), recipients = max(recipients, excluded.recipients),
			kib = max(kib, excluded.kib)`)
		if err != nil {
			return err
		}
		defer hour.Close()
		for _, r := range rows {
			if len(r.Days) == 0 && len(r.Hours) == 0 {
				continue
			}
			last := r.First
			for _, d := range r.Days {
				last = max(last, d.Num)
			}
			var id int64
			if err := acct.QueryRowContext(ctx, r.Account, r.First, last).Scan(&id); err != nil {
				return err
			}
			for _, d := range r.Days {
				if _, err := day.ExecContext(ctx, id, d.Num, d.Msgs, d.Rcpts, d.KiB, d.IPs, d.Flags); err != nil {
					return err
				}
			}
			for _, h := range r.Hours {
				if _, err := hour.ExecContext(ctx, id, h.Num, h.Msgs, h.Rcpts, h.KiB); err != nil {
					return err
				}
			}
		}
		if upTo.IsZero() {
			return nil
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO history_meta(key, value) VALUES('watermark', ?)
			ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)`, ms(upTo))
		return err
	})
}

// HistoryWatermark returns the newest message time the stored history
// counts (zero when there is none).
func (s *Store) HistoryWatermark(ctx context.Context) (time.Time, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, `SELECT value FROM history_meta WHERE key = 'watermark'`).Scan(&v)
	if err == sql.ErrNoRows {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	return fromMS(v), nil
}

// LoadHistory calls f with each account's rows of the 35 days up to now
// (and of the last 24 hours), accounts with the oldest activity first (so
// that an engine with fewer slots than accounts keeps the active ones).
// The rows passed to f are f's to keep.
func (s *Store) LoadHistory(ctx context.Context, now time.Time, f func(account string, r baseline.Rows)) error {
	fromDay := int(baseline.DayOf(now)) - HistoryDays + 1
	hours := map[int64][]baseline.HourRow{}
	rows, err := s.db.QueryContext(ctx, `SELECT acct, hour, messages, recipients, kib FROM history_hours WHERE hour > ?`, baseline.HourOf(now)-24)
	if err != nil {
		return err
	}
	for rows.Next() {
		var a int64
		var h baseline.HourRow
		if err := rows.Scan(&a, &h.Num, &h.Msgs, &h.Rcpts, &h.KiB); err != nil {
			rows.Close()
			return err
		}
		hours[a] = append(hours[a], h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = s.db.QueryContext(ctx, `SELECT a.id, a.account, a.first_day, d.day, d.messages, d.recipients, d.kib, d.ips, d.flags
		FROM history_days d JOIN history_accounts a ON a.id = d.acct
		WHERE d.day >= ? ORDER BY a.last_day, a.id, d.day`, fromDay)
	if err != nil {
		return err
	}
	defer rows.Close()
	var cur int64
	var name string
	var r baseline.Rows
	emit := func() {
		if name != "" {
			r.Hours = hours[cur]
			f(name, r)
		}
	}
	for rows.Next() {
		var id int64
		var a string
		var first uint16
		var d baseline.Day
		if err := rows.Scan(&id, &a, &first, &d.Num, &d.Msgs, &d.Rcpts, &d.KiB, &d.IPs, &d.Flags); err != nil {
			return err
		}
		if id != cur || name == "" {
			emit()
			cur, name, r = id, a, baseline.Rows{First: first}
		}
		r.Days = append(r.Days, d)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	emit()
	return nil
}

// AccountHistory returns one account's rows of the 35 days up to now and
// of the last 24 hours; false when none are stored.
func (s *Store) AccountHistory(ctx context.Context, account string, now time.Time) (baseline.Rows, bool, error) {
	var r baseline.Rows
	var id int64
	err := s.db.QueryRowContext(ctx, `SELECT id, first_day FROM history_accounts WHERE account = ?`, account).Scan(&id, &r.First)
	if err == sql.ErrNoRows {
		return r, false, nil
	}
	if err != nil {
		return r, false, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT day, messages, recipients, kib, ips, flags FROM history_days WHERE acct = ? AND day >= ? ORDER BY day`,
		id, int(baseline.DayOf(now))-HistoryDays+1)
	if err != nil {
		return r, false, err
	}
	for rows.Next() {
		var d baseline.Day
		if err := rows.Scan(&d.Num, &d.Msgs, &d.Rcpts, &d.KiB, &d.IPs, &d.Flags); err != nil {
			rows.Close()
			return r, false, err
		}
		r.Days = append(r.Days, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return r, false, err
	}
	rows, err = s.db.QueryContext(ctx, `SELECT hour, messages, recipients, kib FROM history_hours WHERE acct = ? AND hour > ? ORDER BY hour`,
		id, baseline.HourOf(now)-24)
	if err != nil {
		return r, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var h baseline.HourRow
		if err := rows.Scan(&h.Num, &h.Msgs, &h.Rcpts, &h.KiB); err != nil {
			return r, false, err
		}
		r.Hours = append(r.Hours, h)
	}
	return r, true, rows.Err()
}

// PruneHistory drops the days and hours older than the 35 days up to now,
// and the accounts left without any; it returns the rows dropped.
func (s *Store) PruneHistory(ctx context.Context, now time.Time) (int64, error) {
	fromDay := int(baseline.DayOf(now)) - HistoryDays + 1
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for _, q := range []struct {
			sql string
			arg any
		}{
			{`DELETE FROM history_days WHERE day < ?`, fromDay},
			{`DELETE FROM history_hours WHERE hour < ?`, fromDay * 24},
			{`DELETE FROM history_accounts WHERE last_day < ?`, fromDay},
		} {
			res, err := tx.ExecContext(ctx, q.sql, q.arg)
			if err != nil {
				return err
			}
			k, _ := res.RowsAffected()
			n += k
		}
		return nil
	})
	return n, err
}
