package postfixpolicy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// conn is one policy connection: one Postfix smtpd process, which sends the
// requests of its SMTP sessions one after the other.
type conn struct {
	s     *Server
	nc    net.Conn
	id    uint64
	r     *bufio.Reader
	q     request
	state atomic.Int32

	// Deadlines are refreshed lazily (see slack) so that a request costs no
	// timer update in the common case.
	readDeadline  time.Time // the read deadline in force
	readIdle      bool      // it is an idle deadline (not a request one)
	writeDeadline time.Time

	// Caches of the last values seen, so that the requests of one SMTP
	// session parse its address and account only once.
	addrRaw []byte
	addr    netip.Addr
	addrOK  bool
	userRaw []byte
	account string

	// The SMTP session the last request belonged to (see session in
	// policy.go), and what it did.
	haveSess    bool
	sessKey     []byte
	session     string
	authed      string     // the account AuthOK was decided for
	sessMsg     bool       // a message was decided: Disconnect is due when it ends
	sessAccount string     // for that Disconnect
	sessIP      netip.Addr // for that Disconnect
	msgKey      []byte     // instance of the last message counted
	tmp         []byte     // scratch for building the session key
}

func (c *conn) serve() {
	defer c.s.untrack(c)
	defer c.nc.Close()
	for {
		c.state.Store(stateIdle)
		if c.s.closing.Load() {
			return
		}
		now := time.Now()
		if idle := c.s.cfg.IdleTimeout; !c.readIdle || now.Add(idle-slack(idle)).After(c.readDeadline) {
			c.setReadDeadline(now.Add(idle), true)
		}
		started, err := readRequest(c.r, &c.q, &c.s.lim, c.begin)
		if err != nil {
			c.readFailed(started, err)
			return
		}
		ans, err := c.answer(&c.q)
		if err != nil {
			c.logClose("refused request", err)
			return
		}
		if err := c.write(ans); err != nil {
			if !c.s.closing.Load() {
				c.logClose("write failed", err)
			}
			return
		}
	}
}

// begin runs when the first line of a request arrived: the connection is
// busy, and the rest of the request must come within RequestTimeout unless
// it is already buffered (as it is when Postfix sent it at once).
func (c *conn) begin(r *bufio.Reader) {
	c.state.Store(stateActive)
	if !complete(r) {
		c.setReadDeadline(time.Now().Add(c.s.cfg.RequestTimeout), false)
	}
}

// slack is how stale a deadline may get before it is moved: a tenth of the
// timeout, at most a second. A connection may thus be closed that much
// before the full timeout has passed since its last request.
func slack(timeout time.Duration) time.Duration { return min(timeout/10, time.Second) }

func (c *conn) setReadDeadline(t time.Time, idle bool) {
	c.readDeadline, c.readIdle = t, idle
	c.nc.SetReadDeadline(t)
}

func (c *conn) write(b []byte) error {
	now := time.Now()
	if wt := c.s.cfg.WriteTimeout; now.Add(wt - slack(wt)).After(c.writeDeadline) {
		c.writeDeadline = now.Add(wt)
		c.nc.SetWriteDeadline(c.writeDeadline)
	}
	_, err := c.nc.Write(b)
	return err
}

// readFailed logs why a connection ends, unless the peer simply closed it
// between requests or the server is shutting down.
func (c *conn) readFailed(started bool, err error) {
	switch {
	case !started && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)):
		return
	case c.s.closing.Load() && errors.Is(err, net.ErrClosed):
		return
	case !started && errors.Is(err, os.ErrDeadlineExceeded):
		c.s.log.Info("postfix policy: closing idle connection",
			"conn", c.id, "remote", remote(c.nc), "idle_timeout", c.s.cfg.IdleTimeout)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.logClose("request not completed in time", err, "request_timeout", c.s.cfg.RequestTimeout)
	default:
		c.logClose("bad request", err)
	}
}

// logClose logs one line for a connection closed without a reply.
func (c *conn) logClose(msg string, err error, args ...any) {
	a := []any{"conn", c.id, "remote", remote(c.nc), "err", err.Error()}
	if c.q.bytes > 0 {
		a = append(a, "bytes", c.q.bytes, "attributes", c.q.attrs)
	}
	a = append(a, args...)
	c.s.log.Warn("postfix policy: "+msg+"; closing connection without reply", a...)
}

func remote(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	return "local"
}

// quoted makes a request value safe to log: quoted, at most 64 bytes.
func quoted(b []byte) string {
	if len(b) > 64 {
		return strconv.Quote(string(b[:64])) + "…"
	}
	return strconv.Quote(string(b))
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) }
