package dovecotpolicy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"
)

// This file is the HTTP/1.1 server (RFC 9112): only what one endpoint
// receiving small POSTs from Dovecot's HTTP client needs. Each connection
// has one goroutine and its own buffers; a request that arrives whole
// costs one read and one write. What it does not do: HTTP/2, TLS,
// obsolete line folding, transfer codings other than chunked, a request
// with both Content-Length and Transfer-Encoding (refused: 400). Requests
// may be pipelined; their answers are written in order, together when
// they were read together. HTTP/1.0 is answered and closed unless it asks
// for keep-alive.

// Connection states, for Shutdown: an idle connection waits for the first
// byte of a request and may be closed at once.
const (
	stateActive int32 = iota
	stateIdle
	stateClosed
)

const (
	minReadBuf    = 4 << 10  // the read buffer holds at least this, and at least MaxHeaderBytes
	maxChunkLine  = 4 << 10  // a chunk-size line, extensions included
	maxChunkWaste = 16 << 10 // bytes of chunked framing not paid for by data (as net/http)
	lingerTime    = 500 * time.Millisecond
	lingerBytes   = 256 << 10
)

// conn is one client connection.
type conn struct {
	s   *Server
	nc  net.Conn
	sem chan struct{} // the listener's connection slots; one is ours

	buf  []byte // read buffer; unread data is buf[r:w]
	r, w int
	scan int    // the head in buf[r:w] has no empty line before r+scan
	out  []byte // answers not yet written
	body []byte // bodies that do not sit in buf (chunked, or larger than it)
	tmp  []byte // JSON unescaping

	state     atomic.Int32
	rdl       time.Time // read deadline set on nc
	start     time.Time // when the current request began
	requests  int       // requests answered
	sent      bool      // the client sent at least one byte
	served    bool      // a request reached the handler
	closing   bool      // close once the answers are written
	keepAlive bool      // an HTTP/1.0 request asked to keep the connection
	unread    bool      // input the connection did not consume may follow (answer an error, then linger)
	readErr   error     // the connection failed reading
	peer      string
}

func (s *Server) newConn(nc net.Conn, sem chan struct{}) *conn {
	n := max(s.cfg.MaxHeaderBytes, minReadBuf)
	c := &conn{s: s, nc: nc, sem: sem, buf: make([]byte, n), out: make([]byte, 0, 512), start: time.Now()}
	c.state.Store(stateIdle)
	return c
}

// serve answers requests on c until it closes.
func (c *conn) serve() {
	defer c.finish()
	defer func() {
		if v := recover(); v != nil {
			c.s.log.Error("dovecot policy: panic serving a connection", "source", Source, "peer", c.peerAddr(),
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			c.closing, c.unread = true, false
		}
	}()
	for c.next() {
	}
}

// next reads and answers one request and reports whether the connection
// goes on. Answers are queued; they are written before the connection
// waits for more input, and when it closes.
func (c *conn) next() bool {
	if c.closing {
		return false
	}
	if c.r == c.w {
		c.r, c.w, c.scan = 0, 0, 0
		if !c.waitRequest() {
			return false
		}
	} else if c.requests > 0 {
		c.start = time.Now() // a pipelined request
	}
	n, herr := c.readHead()
	if n < 0 {
		if herr != nil {
			c.fail(herr)
		}
		return false
	}
	var h reqHead
	if herr := parseHead(c.buf[c.r:c.r+n], c.s.cfg.APIHeader, &h); herr != nil {
		c.fail(herr)
		return false
	}
	c.r += n
	c.scan = 0
	c.served = true
	c.closing = h.close || h.minor == 0 && !h.keepAlive
	c.keepAlive = h.minor == 0 && h.keepAlive && !h.close
	c.handle(&h)
	c.requests++
	return !c.closing
}

// waitRequest writes the pending answers and waits for the first bytes
// of the next request: ReadHeaderTimeout for the first request of a
// connection, IdleTimeout for the next ones. It reports whether bytes
// came.
func (c *conn) waitRequest() bool {
	if !c.flush() {
		return false
	}
	deadline := c.start.Add(c.s.cfg.ReadHeaderTimeout)
	if c.requests > 0 {
		deadline = time.Now().Add(c.s.cfg.IdleTimeout)
	}
	c.state.Store(stateIdle)
	if c.s.shutting.Load() {
		return false
	}
	err := c.read(deadline)
	if !c.state.CompareAndSwap(stateIdle, stateActive) {
		return false // closed by Shutdown
	}
	if c.w == 0 {
		c.readErr = err
		return false
	}
	if c.requests > 0 {
		c.start = time.Now()
	}
	return true
}

// read reads once into buf[w:] (moving the unread data to the front when
// the buffer's end is reached) with the given read deadline.
func (c *conn) read(deadline time.Time) error {
	if !deadline.Equal(c.rdl) {
		c.nc.SetReadDeadline(deadline)
		c.rdl = deadline
	}
	if c.w == len(c.buf) && c.r > 0 {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	n, err := c.nc.Read(c.buf[c.w:])
	c.w += n
	if n > 0 {
		c.sent = true
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// headDeadline bounds the reading of a request's head.
func (c *conn) headDeadline() time.Time {
	return c.start.Add(min(c.s.cfg.ReadHeaderTimeout, c.s.cfg.ReadTimeout))
}

// readHead reads until buf[r:] holds a whole head and returns its length,
// or -1 with the error to answer (nil: close without answering).
func (c *conn) readHead() (int, *httpError) {
	if !tokenByte[c.buf[c.r]] {
		return -1, errRequestLine // not HTTP (a TLS handshake?): no need to wait for a line
	}
	for {
		if n := headEnd(c.buf[c.r:c.w], &c.scan); n >= 0 {
			if n > c.s.cfg.MaxHeaderBytes {
				return -1, errHeadTooLarge
			}
			return n, nil
		}
		if c.w-c.r >= c.s.cfg.MaxHeaderBytes {
			return -1, errHeadTooLarge
		}
		if !c.flush() {
			return -1, nil
		}
		if err := c.read(c.headDeadline()); err != nil {
			c.readErr = err
			return -1, errIncomplete
		}
	}
}

// readBody reads the body of h: Content-Length bytes or chunks. The
// result aliases the connection's buffers until the next request.
func (c *conn) readBody(h *reqHead) ([]byte, error) {
	if h.chunked {
		c.unread = true // until the last chunk is read
		c.sendContinue(h)
		b, err := c.readChunked()
		if err == nil {
			c.unread = false
		}
		return b, err
	}
	n := int(max(h.clen, 0)) // the caller checked it against MaxBodyBytes
	if c.w-c.r >= n {
		b := c.buf[c.r : c.r+n]
		c.r += n
		return b, nil
	}
	c.unread = true
	c.sendContinue(h)
	deadline := c.start.Add(c.s.cfg.ReadTimeout)
	if n <= len(c.buf) {
		if n > len(c.buf)-c.r {
			c.w = copy(c.buf, c.buf[c.r:c.w])
			c.r = 0
		}
		for c.w-c.r < n {
			if err := c.read(deadline); err != nil {
				return nil, err
			}
		}
		b := c.buf[c.r : c.r+n]
		c.r += n
		c.unread = false
		return b, nil
	}
	// Larger than the read buffer: read exactly the rest into body.
	b := append(c.body[:0], c.buf[c.r:c.w]...)
	c.r = c.w
	b = growTo(b, n)
	for len(b) < n {
		if !deadline.Equal(c.rdl) {
			c.nc.SetReadDeadline(deadline)
			c.rdl = deadline
		}
		k, err := c.nc.Read(b[len(b):n])
		b = b[:len(b)+k]
		if err != nil && len(b) < n {
			c.body = b
			return nil, err
		}
	}
	c.body = b
	c.unread = false
	return b, nil
}

// growTo returns b with room for n bytes.
func growTo(b []byte, n int) []byte {
	if cap(b) >= n {
		return b
	}
	nb := make([]byte, len(b), n)
	copy(nb, b)
	return nb
}

// sendContinue answers "100 Continue" to a client waiting for it before
// it sends the body.
func (c *conn) sendContinue(h *reqHead) {
	if !h.expect || h.minor == 0 {
		return
	}
	h.expect = false
	c.out = append(c.out, "HTTP/1.1 100 Continue\r\n\r\n"...)
	c.flush()
}

// readChunked reads a chunked body into c.body, at most MaxBodyBytes of
// data, and the trailer section after it (at most MaxHeaderBytes).
func (c *conn) readChunked() ([]byte, error) {
	deadline := c.start.Add(c.s.cfg.ReadTimeout)
	b := c.body[:0]
	defer func() { c.body = b[:0] }()
	waste := 0
	for {
		line, err := c.readLine(maxChunkLine, deadline)
		if err != nil {
			return nil, err
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return nil, errChunked
		}
		if size == 0 {
			break
		}
		if size > c.s.cfg.MaxBodyBytes-int64(len(b)) {
			return nil, errTooLarge
		}
		waste = max(waste+len(line)+4-16-2*int(size), 0)
		if waste > maxChunkWaste {
			return nil, errChunkWaste
		}
		for n := int(size); n > 0; {
			if c.r == c.w {
				c.r, c.w = 0, 0
				if err := c.read(deadline); err != nil {
					return nil, err
				}
			}
			k := min(n, c.w-c.r)
			b = append(b, c.buf[c.r:c.r+k]...)
			c.r += k
			n -= k
		}
		for c.w-c.r < 2 {
			if err := c.read(deadline); err != nil {
				return nil, err
			}
		}
		if c.buf[c.r] != '\r' || c.buf[c.r+1] != '\n' {
			return nil, errChunked
		}
		c.r += 2
	}
	for trailer := 0; ; {
		line, err := c.readLine(maxChunkLine, deadline)
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			return b, nil
		}
		if trailer += len(line) + 2; trailer > c.s.cfg.MaxHeaderBytes {
			return nil, errTrailerTooBig
		}
	}
}

// readLine returns the next line of the input, without its CRLF or LF,
// valid until the next read.
func (c *conn) readLine(limit int, deadline time.Time) ([]byte, error) {
	for {
		if i := bytes.IndexByte(c.buf[c.r:c.w], '\n'); i >= 0 {
			line := c.buf[c.r : c.r+i]
			c.r += i + 1
			if len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
			}
			return line, nil
		}
		if c.w-c.r >= limit {
			return nil, errChunked
		}
		if err := c.read(deadline); err != nil {
			return nil, err
		}
	}
}

// skipBody passes over the body of a request refused without reading
// it, when the body is already in the buffer; otherwise the connection
// is closed after the answer.
func (c *conn) skipBody(h *reqHead) {
	if !h.chunked && c.w-c.r >= int(max(h.clen, 0)) {
		c.r += int(max(h.clen, 0))
		return
	}
	c.closing, c.unread = true, true
}

// Answers. The headers come in net/http's order: those the handler
// sets, sorted, then Content-Length, then the connection's own.
const (
	hdrAllow     = 1 << iota // Allow: POST
	hdrClose                 // Connection: close, set by the handler
	hdrBasicAuth             // WWW-Authenticate: Basic
)

// answerJSON queues a 200 answer with a JSON body.
func (c *conn) answerJSON(body []byte) {
	c.out = append(c.out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "...)
	c.out = strconv.AppendInt(c.out, int64(len(body)), 10)
	c.out = c.appendConnection(c.out, false)
	c.out = append(c.out, body...)
}

// answerPlain queues an answer with a text body.
func (c *conn) answerPlain(code int, msg string, hdrs int) {
	b := append(c.out, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, reasonPhrase(code)...)
	b = append(b, "\r\n"...)
	if hdrs&hdrAllow != 0 {
		b = append(b, "Allow: POST\r\n"...)
	}
	if hdrs&hdrClose != 0 {
		b = append(b, "Connection: close\r\n"...)
		c.closing = true
	}
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\n"...)
	if hdrs&hdrBasicAuth != 0 {
		b = append(b, "Www-Authenticate: Basic realm=\"mailwarden\"\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(msg)+1), 10)
	b = c.appendConnection(b, hdrs&hdrClose != 0)
	b = append(b, msg...)
	c.out = append(b, '\n')
}

// appendConnection ends the headers of an answer, with the connection
// header the connection's state calls for.
func (c *conn) appendConnection(b []byte, closeSent bool) []byte {
	if c.s.shutting.Load() {
		c.closing = true
	}
	switch {
	case c.closing && !closeSent:
		return append(b, "\r\nConnection: close\r\n\r\n"...)
	case !c.closing && c.keepAlive:
		return append(b, "\r\nConnection: keep-alive\r\n\r\n"...)
	}
	return append(b, "\r\n\r\n"...)
}

// fail answers a request the HTTP layer refuses (or a partial one that
// stopped coming), then the connection closes.
func (c *conn) fail(e *httpError) {
	c.closing = true
	c.unread = c.readErr == nil
	if c.readErr != nil && c.w == c.r {
		return // nothing of a request came
	}
	c.answerPlain(e.code, e.text, 0)
}

func reasonPhrase(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 405:
		return "Method Not Allowed"
	case 413:
		return "Request Entity Too Large"
	case 415:
		return "Unsupported Media Type"
	case 417:
		return "Expectation Failed"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}

// flush writes the queued answers within WriteTimeout.
func (c *conn) flush() bool {
	if len(c.out) == 0 {
		return true
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	_, err := c.nc.Write(c.out)
	c.out = c.out[:0]
	if err != nil {
		c.closing, c.unread = true, false
		return false
	}
	return true
}

// finish writes what is left, closes the connection and accounts for it.
// A connection closed while the client may still be sending is
// half-closed first and read for a moment, so that the client reads the
// answer rather than a reset.
func (c *conn) finish() {
	c.state.Store(stateClosed)
	if c.flush() && c.unread {
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			c.nc.SetReadDeadline(time.Now().Add(lingerTime))
			io.CopyN(io.Discard, c.nc, lingerBytes)
		}
	}
	c.nc.Close()
	c.s.forget(c)
	<-c.sem
	if !c.served {
		c.s.logDropped(c.peerAddr(), c.sent)
	}
}

func (c *conn) peerAddr() string {
	if c.peer == "" {
		if a := c.nc.RemoteAddr(); a != nil {
			c.peer = a.String()
		}
	}
	return c.peer
}
