package main

import (
	"bufio"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// runWarm fills a server's state before it is measured, as fast as the
// server answers, within duration:
//
//  1. over Postfix (network, address): every account logs in (RCPT) and
//     sends one message (END-OF-MESSAGE) from each of its three usual
//     addresses, the ones the load uses, one SMTP session each: every
//     account and its usual addresses become known, as on a server that
//     has been running for a while;
//  2. over Dovecot (dovecotAddr, when set): every one of the clients
//     addresses fails one login at a common name (admin, test, …), the
//     background guessing every mail server sees. Addresses become
//     tracked without any detector firing: one failure per address, one
//     name per address, and names that never log in are not protected
//     accounts.
//
// Accounts never log in from a new address here, so no account is locked.
func runWarm(network, address, dovecotAddr, apiKey string, conns int, duration time.Duration, accounts, clients int, seed uint64) error {
	deadline := time.Now().Add(duration)
	total := int64(accounts) * 3
	var next atomic.Int64
	res, err := runConns(network, address, conns, duration, func(i int, nc net.Conn, _ *atomic.Int64, _ *atomic.Bool, dl time.Time) *result {
		g := newGen(seed^0x77617272+uint64(i)*0x9e3779b97f4a7c15, accounts, clients)
		return warmPostfix(nc, g, &next, total, dl)
	})
	if err != nil {
		return fmt.Errorf("warm-up over Postfix: %w", err)
	}
	done := min(next.Load(), total)
	fmt.Printf("warm-up     Postfix: %d of %d account logins (+ one message each): %d requests in %.2fs, %.0f requests/s, %d refused\n",
		done, total, res.requests, res.elapsed.Seconds(), float64(res.requests)/res.elapsed.Seconds(), res.refused)
	if res.errors > 0 {
		return fmt.Errorf("warm-up over Postfix: %d errors, first: %v", res.errors, res.firstErr)
	}
	if dovecotAddr == "" {
		return nil
	}
	left := time.Until(deadline)
	if left <= 0 {
		fmt.Println("warm-up     Dovecot: skipped, -duration used up")
		return nil
	}
	var nextAddr atomic.Int64
	res, err = runConns("tcp", dovecotAddr, conns, left, func(i int, nc net.Conn, _ *atomic.Int64, _ *atomic.Bool, dl time.Time) *result {
		d := newDgen(seed^0x646f7665+uint64(i)*0x9e3779b97f4a7c15, accounts, clients, dovecotAddr, apiKey)
		return warmDovecot(nc, d, &nextAddr, int64(clients), dl)
	})
	if err != nil {
		return fmt.Errorf("warm-up over Dovecot: %w", err)
	}
	done = min(nextAddr.Load(), int64(clients))
	fmt.Printf("warm-up     Dovecot: %d of %d addresses, one failed login each: %d requests in %.2fs, %.0f requests/s, %d refused\n",
		done, clients, res.requests, res.elapsed.Seconds(), float64(res.requests)/res.elapsed.Seconds(), res.refused)
	if res.errors > 0 {
		return fmt.Errorf("warm-up over Dovecot: %d errors, first: %v", res.errors, res.firstErr)
	}
	return nil
}

// warmPostfix sends, for each item n it takes, the RCPT and END-OF-MESSAGE
// requests of account n/3 from its usual address n%3.
func warmPostfix(nc net.Conn, g *gen, next *atomic.Int64, total int64, deadline time.Time) *result {
	res := &result{hist: make([]uint64, histMicros)}
	r := bufio.NewReaderSize(nc, 4096)
	nc.SetDeadline(deadline.Add(10 * time.Second))
	for {
		n := next.Add(1) - 1
		if n >= total || time.Now().After(deadline) {
			return res
		}
		g.account = int(n / 3)
		g.client = g.usualClient(g.account, int(n%3))
		g.port = 1024 + g.rng.IntN(64000)
		g.instance++
		for _, st := range []step{
			{state: "RCPT", msg: g.instance},
			{state: "END-OF-MESSAGE", rcpts: 1, size: 500 + g.rng.IntN(50_000), msg: g.instance},
		} {
			t := time.Now()
			if _, err := nc.Write(g.build(st)); err != nil {
				res.errors++
				res.firstErr = err
				return res
			}
			dunno, err := readAnswer(r)
			if err != nil {
				res.errors++
				res.firstErr = err
				return res
			}
			if !dunno {
				res.refused++
			}
			res.record(time.Since(t))
		}
	}
}

// warmDovecot reports, for each address number n it takes, one failed
// login at a common name from that address.
func warmDovecot(nc net.Conn, d *dgen, next *atomic.Int64, total int64, deadline time.Time) *result {
	res := &result{hist: make([]uint64, histMicros)}
	r := bufio.NewReaderSize(nc, 4096)
	nc.SetDeadline(deadline.Add(10 * time.Second))
	for {
		n := next.Add(1) - 1
		if n >= total || time.Now().After(deadline) {
			return res
		}
		d.newLogin() // protocol and session id
		d.remote = int(n)
		d.login = append(d.login[:0], commonNames[n%int64(len(commonNames))]...)
		d.pwhash = d.rng.Uint32() & 0xffffff
		d.success = false
		d.body = d.appendBody(d.body[:0], true)
		d.req = d.appendRequest(d.req[:0], true, d.body)
		t := time.Now()
		if _, err := nc.Write(d.req); err != nil {
			res.errors++
			res.firstErr = err
			return res
		}
		status, err := readHTTPStatus(r)
		if err != nil {
			res.errors++
			res.firstErr = err
			return res
		}
		if status < 0 {
			res.refused++
		}
		res.record(time.Since(t))
	}
}
