package kick

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/tool"
)

// maxBody bounds the doveadm API answer read.
const maxBody = 1 << 20

// httpKicker uses the doveadm HTTP API: POST <url> with
// Authorization: X-Dovecot-API <base64(doveadm_api_key)> and a JSON body
// [["kick",{"mask":["<account>"]},"<tag>"]]. The answer is
// [["doveadmResponse",<array of objects>,"<tag>"]] or
// [["error",{"type":"…","exitCode":N},"<tag>"]] (HTTP 200 both); a bad key
// gets 401 and a malformed request 400 with a text body.
type httpKicker struct {
	url     string
	auth    string
	timeout time.Duration
	client  *http.Client
}

func newHTTP(rawURL, apiKey string, timeout time.Duration) (*httpKicker, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("kick url %q is not an http(s) URL such as http://127.0.0.1:8080/doveadm/v1", rawURL)
	}
	if apiKey == "" {
		return nil, errors.New("kick method http needs api_key: set it to Dovecot's doveadm_api_key")
	}
	// No proxy from the environment (the key must reach Dovecot only) and
	// no redirects (they would carry the key elsewhere).
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: timeout}).DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          2,
		IdleConnTimeout:       30 * time.Second,
	}
	return &httpKicker{
		url:     rawURL,
		auth:    "X-Dovecot-API " + base64.StdEncoding.EncodeToString([]byte(apiKey)),
		timeout: timeout,
		client: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}, nil
}

// Kick counts the account's connections (doveadm who), then kicks them.
// The count only matters for a Dovecot that does not report one itself
// (2.3); if it fails the kick still happens.
func (k *httpKicker) Kick(ctx context.Context, account string) (Result, error) {
	res := Result{Method: "http"}
	if err := CheckAccount(account); err != nil {
		return res, err
	}
	ctx, cancel := withTimeout(ctx, k.timeout)
	defer cancel()
	// who gets half the time at most: the kick must still happen.
	wctx, wcancel := context.WithTimeout(ctx, k.timeout/2)
	counted, whoErr := k.who(wctx, account)
	wcancel()
	rows, code, err := k.call(ctx, "kick", account)
	if err != nil {
		return res, err
	}
	if code == exitNotFound {
		res.Detail = "no live session (doveadm kick: nothing matched)"
		return res, nil
	}
	if code != 0 {
		return res, fmt.Errorf("doveadm kick %s: %s", quote(account), exitMeaning(code))
	}
	var users []string
	count, haveCount := 0, false
	for _, r := range rows {
		if v, ok := r["count"]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return res, fmt.Errorf("doveadm kick %s: unexpected count %q in the answer", quote(account), tool.Sanitize(v, 40))
			}
			count += n
			haveCount = true
		}
		if v, ok := r["result"]; ok && v != "" {
			users = append(users, v)
		}
	}
	switch {
	case haveCount:
		res.Kicked = count
		res.Detail = fmt.Sprintf("dovecot: %d connection(s) kicked", count)
	case len(users) > 0:
		res.Kicked = kickedFromUsers(users, counted)
		res.Detail = fmt.Sprintf("dovecot kicked the sessions of %s; %d connection(s) listed by doveadm who before the kick", tool.Sanitize(strings.Join(users, " "), 300), counted)
		if whoErr != nil {
			res.Detail += " (who failed: " + tool.Sanitize(whoErr.Error(), 200) + ")"
		}
	default:
		res.Detail = "dovecot answered the kick without output"
	}
	return res, nil
}

// who returns the number of connections doveadm who lists for account.
func (k *httpKicker) who(ctx context.Context, account string) (int, error) {
	rows, code, err := k.call(ctx, "who", account)
	if err != nil {
		return 0, err
	}
	if code != 0 && code != exitNotFound {
		return 0, fmt.Errorf("doveadm who: %s", exitMeaning(code))
	}
	n := 0
	for _, r := range rows {
		c, err := strconv.Atoi(r["connections"])
		if err != nil || c < 1 {
			c = 1
		}
		n += c
	}
	return n, nil
}

// call runs one doveadm command with {"mask":[account]} and returns the
// response objects (string values only), or the exit code of an error
// answer of type exitCode.
func (k *httpKicker) call(ctx context.Context, command, account string) ([]map[string]string, int, error) {
	tag := "mailwarden-" + command
	body, err := json.Marshal([]any{[]any{command, map[string]any{"mask": []string{account}}, tag}})
	if err != nil {
		return nil, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.url, bytes.NewReader(body))
	if err != nil {
		return nil, 0, fmt.Errorf("doveadm API %s: %w", k.url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", k.auth)
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("doveadm API %s (%s): %w", k.url, command, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, 0, fmt.Errorf("doveadm API %s (%s): reading the answer: %w", k.url, command, err)
	}
	if len(data) > maxBody {
		return nil, 0, fmt.Errorf("doveadm API %s (%s): answer over %d bytes", k.url, command, maxBody)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, 0, fmt.Errorf("doveadm API %s refused the key (%s): responses.kick.api_key must equal Dovecot's doveadm_api_key", k.url, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, 0, fmt.Errorf("doveadm API %s (%s): %s: %s", k.url, command, resp.Status, tool.Sanitize(string(data), 300))
	}
	return parseAnswer(data, command, tag)
}

// parseAnswer reads [[type, payload…, tag], …] and returns the answer with
// the tag (or the only one). Dovecot 2.3's JSON printer closes the list of
// a response after its first object and puts the others after it:
// [["doveadmResponse",[{row 1}],{row 2},{row 3},"tag"]]. Both forms are
// read.
func parseAnswer(data []byte, command, tag string) ([]map[string]string, int, error) {
	var answers [][]json.RawMessage
	if err := json.Unmarshal(data, &answers); err != nil {
		return nil, 0, fmt.Errorf("doveadm %s: the API answered something other than a JSON array of answers: %s", command, tool.Sanitize(string(data), 200))
	}
	var found []json.RawMessage
	for _, a := range answers {
		if len(a) < 2 {
			continue
		}
		var t string
		if len(a) >= 3 && json.Unmarshal(a[len(a)-1], &t) == nil {
			if t == tag {
				found = a[:len(a)-1]
				break
			}
			if len(answers) == 1 {
				found = a[:len(a)-1]
			}
		} else if len(answers) == 1 {
			found = a
		}
	}
	if found == nil {
		return nil, 0, fmt.Errorf("doveadm %s: no answer with tag %q in %s", command, tag, tool.Sanitize(string(data), 200))
	}
	var kind string
	if err := json.Unmarshal(found[0], &kind); err != nil {
		return nil, 0, fmt.Errorf("doveadm %s: answer type is not a string: %s", command, tool.Sanitize(string(found[0]), 100))
	}
	switch kind {
	case "doveadmResponse":
		var rows []map[string]string
		for _, part := range found[1:] {
			var list []map[string]any
			if err := json.Unmarshal(part, &list); err != nil {
				var one map[string]any
				if err := json.Unmarshal(part, &one); err != nil {
					return nil, 0, fmt.Errorf("doveadm %s: response is not a list of objects: %s", command, tool.Sanitize(string(part), 200))
				}
				list = []map[string]any{one}
			}
			for _, r := range list {
				row := make(map[string]string, len(r))
				for key, v := range r {
					switch v := v.(type) {
					case string:
						row[key] = v
					case float64:
						row[key] = strconv.FormatFloat(v, 'f', -1, 64)
					}
				}
				rows = append(rows, row)
			}
		}
		return rows, 0, nil
	case "error":
		var e struct {
			Type     string `json:"type"`
			ExitCode int    `json:"exitCode"`
		}
		if err := json.Unmarshal(found[1], &e); err != nil {
			return nil, 0, fmt.Errorf("doveadm %s: unreadable error answer: %s", command, tool.Sanitize(string(found[1]), 200))
		}
		if e.Type == "exitCode" && e.ExitCode != 0 {
			return nil, e.ExitCode, nil
		}
		return nil, 0, fmt.Errorf("doveadm %s: error %s (exit code %d): this Dovecot does not accept the request", command, quote(e.Type), e.ExitCode)
	default:
		return nil, 0, fmt.Errorf("doveadm %s: unexpected answer type %s", command, quote(kind))
	}
}

// exitMeaning explains a doveadm exit code.
func exitMeaning(code int) string {
	what := map[int]string{
		64: "usage error",
		65: "data error",
		67: "no such user",
		68: "not found",
		75: "temporary failure (is anvil running?)",
		77: "permission denied",
		78: "configuration error",
	}[code]
	if what == "" {
		what = "failed"
	}
	return fmt.Sprintf("%s (exit code %d)", what, code)
}
