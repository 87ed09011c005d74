package daemon

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
	"github.com/mailwarden/mailwarden/internal/event"
)

// historyEvery is how often the accounts' changed daily and hourly
// aggregates are written to the state file. A crash loses at most this
// much of them, and the event journal gives it back at the restart.
const historyEvery = time.Minute

// restoreHistory loads the stored aggregates into the engine (before the
// journal is replayed: the watermark tells the engine which of the
// journal's messages the aggregates already count) and has the engine
// track what changes from now on.
func (d *Daemon) restoreHistory(ctx context.Context, now time.Time) error {
	d.eng.TrackHistory()
	n := 0
	err := d.st.LoadHistory(ctx, now, func(account string, r baseline.Rows) {
		d.eng.RestoreHistory(account, r)
		n++
	})
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	mark, err := d.st.HistoryWatermark(ctx)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	d.eng.SetHistoryWatermark(mark)
	d.log.Info("history restored", "accounts", n, "counted_up_to", mark)
	return nil
}

// snapshotHistory writes the aggregates that changed since the last
// snapshot and, at the first snapshot of each hour, prunes those older
// than 35 days (a scan of the tables: not every minute).
func (d *Daemon) snapshotHistory(ctx context.Context) {
	rows, upTo, dropped := d.eng.HistoryChanges()
	if dropped > 0 {
		d.log.Warn("more accounts changed than max_tracked_keys between two history snapshots: some of their rows are written later or not at all", "not_written", dropped)
	}
	if len(rows) > 0 {
		if err := d.st.PutHistory(ctx, rows, upTo); err != nil {
			d.log.Error("history not written; the journal rebuilds it after a restart within serve.journal", "accounts", len(rows), "err", err)
		}
	}
	now := d.clock()
	if now.Minute() != 0 {
		return
	}
	if _, err := d.st.PruneHistory(ctx, now); err != nil {
		d.log.Error("history prune failed", "err", err)
	}
}

// hHistory answers an account's history: its days, what is usual for it
// and the thresholds it is held to now.
func (d *Daemon) hHistory(w http.ResponseWriter, r *http.Request) {
	acct := event.NormalizeAccount(r.URL.Query().Get("account"))
	if acct == "" {
		httpError(w, http.StatusBadRequest, "an account is required: /v1/history?account=A")
		return
	}
	now := d.clock()
	stored, ok, err := d.st.AccountHistory(r.Context(), acct, now)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	rep := d.eng.HistoryReport(acct, stored, now)
	if !ok && len(rep.Days) == 0 {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no message of %q in the history", acct))
		return
	}
	writeJSON(w, rep)
}
