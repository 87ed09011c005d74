package daemon

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/notify"
	"github.com/mailwarden/mailwarden/internal/report"
	"github.com/mailwarden/mailwarden/internal/store"
)

// Status is what `mailwarden status` shows.
type Status struct {
	Node           string    `json:"node"`
	Started        time.Time `json:"started"`
	StateFile      string    `json:"state_file"`
	Decisions      uint64    `json:"decisions"`
	Incidents      uint64    `json:"incidents"`
	TrackedKeys    int       `json:"tracked_keys"`
	Locks          int       `json:"locks"`
	Blocks         int       `json:"blocks"`
	JournalDropped uint64    `json:"journal_dropped,omitempty"`
	// ResponsesGivenUp counts lock responses and notifications dropped
	// because the responder's queue was full.
	ResponsesGivenUp uint64 `json:"responses_given_up,omitempty"`
	// Notifications counts deliveries per channel (sent, failed attempts,
	// given up and why).
	Notifications []notify.ChannelStats `json:"notifications,omitempty"`
	DryRun        bool                  `json:"dry_run,omitempty"`
}

type ctxKey struct{}

// ConnContext remembers the connection of each admin request so that the
// handler can ask a unix socket for its peer's identity. Set it as the
// http.Server's ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// actor names who makes a change: the peer user of a unix socket, or
// "token" for a TCP client that presented the admin token.
func actor(r *http.Request) string {
	c, _ := r.Context().Value(ctxKey{}).(net.Conn)
	if uc, ok := c.(*net.UnixConn); ok {
		raw, err := uc.SyscallConn()
		if err == nil {
			var cred *unix.Ucred
			raw.Control(func(fd uintptr) {
				cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
			})
			if cred != nil {
				if u, err := user.LookupId(strconv.Itoa(int(cred.Uid))); err == nil {
					return u.Username
				}
				return "uid " + strconv.Itoa(int(cred.Uid))
			}
		}
	}
	return "admin-token"
}

// AdminHandler serves the admin API. token, when not empty, is required as
// "Authorization: Bearer <token>" (TCP listeners); a unix socket is
// protected by its file permissions instead.
func (d *Daemon) AdminHandler(token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", d.hStatus)
	mux.HandleFunc("GET /v1/locks", d.hLocks)
	mux.HandleFunc("POST /v1/locks", d.hLock)
	mux.HandleFunc("DELETE /v1/locks/{account}", d.hUnlock)
	mux.HandleFunc("GET /v1/blocks", d.hBlocks)
	mux.HandleFunc("POST /v1/blocks", d.hBlock)
	mux.HandleFunc("DELETE /v1/blocks/{ip}", d.hUnblock)
	mux.HandleFunc("GET /v1/incidents", d.hIncidents)
	mux.HandleFunc("GET /v1/report/{account}", d.hReport)
	mux.HandleFunc("GET /v1/audit", d.hAudit)
	mux.HandleFunc("GET /v1/history", d.hHistory)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" {
			got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				d.log.Warn("admin request with a wrong or missing token", "remote", r.RemoteAddr, "path", r.URL.Path)
				httpError(w, http.StatusUnauthorized, "missing or wrong token")
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		mux.ServeHTTP(w, r)
	})
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (d *Daemon) hStatus(w http.ResponseWriter, r *http.Request) {
	locks, _ := d.st.Locks(r.Context())
	blocks, _ := d.st.Blocks(r.Context(), d.clock(), false)
	writeJSON(w, Status{
		Node: d.node, Started: d.start.UTC(), StateFile: d.st.Path(),
		Decisions: d.decisions.Load(), Incidents: d.incidents.Load(),
		TrackedKeys: d.eng.TrackedKeys(), Locks: len(locks), Blocks: len(blocks),
		JournalDropped: d.jDropped.Load(), DryRun: d.config().DryRun,
		ResponsesGivenUp: d.resp.dropped.Load(),
		Notifications:    d.resp.notifyStats(),
	})
}

func (d *Daemon) hLocks(w http.ResponseWriter, r *http.Request) {
	locks, err := d.st.Locks(r.Context())
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, locks)
}

// changeRequest is the body of lock and block requests.
type changeRequest struct {
	Account string `json:"account,omitempty"`
	IP      string `json:"ip,omitempty"`
	For     string `json:"for,omitempty"` // block duration, e.g. "2h", "7d"
	Reason  string `json:"reason"`
}

func decodeChange(w http.ResponseWriter, r *http.Request) (changeRequest, bool) {
	var c changeRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		httpError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return c, false
	}
	c.Reason = strings.TrimSpace(c.Reason)
	if c.Reason == "" {
		httpError(w, http.StatusBadRequest, "a reason is required (it goes to the audit log)")
		return c, false
	}
	if len(c.Reason) > 1000 {
		httpError(w, http.StatusBadRequest, "reason too long (at most 1000 bytes)")
		return c, false
	}
	c.Reason = report.Safe(c.Reason)
	return c, true
}

func (d *Daemon) hLock(w http.ResponseWriter, r *http.Request) {
	c, ok := decodeChange(w, r)
	if !ok {
		return
	}
	acct := event.NormalizeAccount(c.Account)
	if acct == "" {
		httpError(w, http.StatusBadRequest, "an account is required")
		return
	}
	now := d.clock()
	if err := d.st.PutLock(r.Context(), store.Lock{Account: acct, Since: now, Reason: c.Reason, Actor: actor(r)}); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	d.eng.LockAccount(acct, now, nil)
	d.resp.submit(job{account: acct, at: now, lock: true})
	d.log.Warn("account locked by an admin", "account", acct, "actor", actor(r), "reason", c.Reason)
	writeJSON(w, map[string]any{"locked": acct})
}

func (d *Daemon) hUnlock(w http.ResponseWriter, r *http.Request) {
	acct := event.NormalizeAccount(r.PathValue("account"))
	reason := report.Safe(strings.TrimSpace(r.URL.Query().Get("reason")))
	if reason == "" {
		reason = "unlocked by an admin"
	}
	queued := r.URL.Query().Get("queued")
	if queued != "" && queued != "release" && queued != "purge" {
		httpError(w, http.StatusBadRequest, "queued must be release or purge")
		return
	}
	was, err := d.st.DeleteLock(r.Context(), acct, actor(r), reason, d.clock())
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	wasEng := d.eng.Unlock(acct)
	if !was && !wasEng && queued == "" {
		httpError(w, http.StatusNotFound, fmt.Sprintf("%q is not locked", acct))
		return
	}
	d.log.Warn("account unlocked by an admin", "account", acct, "actor", actor(r), "reason", reason)
	out := map[string]any{"unlocked": acct}
	if queued != "" {
		detail, err := d.resp.release(r.Context(), acct, queued, actor(r))
		if err != nil {
			d.log.Error("held mail not "+queued+"d", "account", acct, "err", err)
			out["queued_error"] = err.Error()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			json.NewEncoder(w).Encode(out)
			return
		}
		out["queued"] = detail
	}
	writeJSON(w, out)
}

func (d *Daemon) hBlocks(w http.ResponseWriter, r *http.Request) {
	blocks, err := d.st.Blocks(r.Context(), d.clock(), r.URL.Query().Get("all") != "")
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, blocks)
}

func (d *Daemon) hBlock(w http.ResponseWriter, r *http.Request) {
	c, ok := decodeChange(w, r)
	if !ok {
		return
	}
	ip, err := netip.ParseAddr(c.IP)
	if err != nil {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("%q is not an IP address", c.IP))
		return
	}
	dur := d.config().BlockFor.D()
	if c.For != "" {
		if dur, err = config.ParseDuration(c.For); err != nil || dur <= 0 {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("for: %q is not a duration (e.g. 2h, 7d)", c.For))
			return
		}
	}
	now := d.clock()
	_, offence := d.eng.Blocked(ip, now)
	b := store.Block{Net: event.NetKey(ip).String(), IP: ip.String(), Since: now, Until: now.Add(dur), Offence: offence + 1, Reason: c.Reason, Actor: actor(r)}
	if err := d.st.PutBlock(r.Context(), b); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	d.eng.BlockIP(ip, b.Until, b.Offence, nil)
	d.log.Warn("address blocked by an admin", "ip", ip.String(), "until", b.Until, "actor", actor(r), "reason", c.Reason)
	writeJSON(w, b)
}

func (d *Daemon) hUnblock(w http.ResponseWriter, r *http.Request) {
	ip, err := netip.ParseAddr(r.PathValue("ip"))
	if err != nil {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("%q is not an IP address", r.PathValue("ip")))
		return
	}
	reason := report.Safe(strings.TrimSpace(r.URL.Query().Get("reason")))
	if reason == "" {
		reason = "unblocked by an admin"
	}
	was, err := d.st.EndBlock(r.Context(), event.NetKey(ip).String(), actor(r), reason, d.clock())
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if !d.eng.UnblockIP(ip) && !was {
		httpError(w, http.StatusNotFound, fmt.Sprintf("%s is not blocked", ip))
		return
	}
	d.log.Warn("address unblocked by an admin", "ip", ip.String(), "actor", actor(r), "reason", reason)
	writeJSON(w, map[string]any{"unblocked": ip.String()})
}

func (d *Daemon) hIncidents(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 && n <= 10000 {
			limit = n
		}
	}
	incs, err := d.st.Incidents(r.Context(), event.NormalizeAccount(r.URL.Query().Get("account")), limit)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if incs == nil {
		incs = []store.Incident{}
	}
	writeJSON(w, incs)
}

func (d *Daemon) hAudit(w http.ResponseWriter, r *http.Request) {
	a, err := d.st.Audit(r.Context(), 200)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, a)
}

// hReport answers with the account's day tables over the journal, as text,
// and its recent incidents.
func (d *Daemon) hReport(w http.ResponseWriter, r *http.Request) {
	acct := event.NormalizeAccount(r.PathValue("account"))
	if acct == "" {
		httpError(w, http.StatusBadRequest, "an account is required")
		return
	}
	col := &report.Collector{Loc: time.Local, Account: acct}
	col.KeepAll()
	err := d.st.Events(r.Context(), d.clock().Add(-d.config().Serve.Journal.D()), func(ev *event.Event) {
		if ev.Account == acct {
			col.Add(ev)
		}
	})
	if torn := (*store.TornJournal)(nil); errors.As(err, &torn) {
		err = nil // the intact events are shown
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var b bytes.Buffer
	for _, t := range col.Tables(acct) {
		t.Write(&b, time.Local)
	}
	if b.Len() == 0 {
		fmt.Fprintf(&b, "no authenticated use of %s in the journal\n", report.Safe(acct))
	}
	incs, err := d.st.Incidents(r.Context(), acct, 20)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	_, locked := d.lockOf(r.Context(), acct)
	writeJSON(w, map[string]any{"account": acct, "locked": locked, "tables": b.String(), "incidents": incs})
}

func (d *Daemon) lockOf(ctx context.Context, acct string) (store.Lock, bool) {
	locks, _ := d.st.Locks(ctx)
	for _, l := range locks {
		if l.Account == acct {
			return l, true
		}
	}
	return store.Lock{}, false
}
