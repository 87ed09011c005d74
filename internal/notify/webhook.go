package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
)

// Webhook request headers.
const (
	// HeaderSignature carries "sha256=" and the hex HMAC-SHA256 of the
	// exact request body under the webhook's secret.
	HeaderSignature = "X-Mailwarden-Signature"
	// HeaderEvent names the event; EventIncident is the only one.
	HeaderEvent = "X-Mailwarden-Event"
	// HeaderDelivery is the same for every attempt of one incident to one
	// webhook ("incident-<id>", with "-<node>" when the node is set): a
	// receiver that sees it twice has seen a retry.
	HeaderDelivery = "Idempotency-Key"
	EventIncident  = "incident"
)

// WebhookBody is the JSON a webhook receives.
type WebhookBody struct {
	Event      string         `json:"event"` // "incident"
	ID         int64          `json:"id"`
	Node       string         `json:"node,omitempty"`
	Detector   string         `json:"detector"`
	Account    string         `json:"account,omitempty"`
	IP         string         `json:"ip,omitempty"`
	Action     string         `json:"action"`
	DryRun     bool           `json:"dry_run"`
	DetectedAt time.Time      `json:"detected_at"`
	Summary    string         `json:"summary,omitempty"`
	Evidence   map[string]any `json:"evidence"`
	Done       []string       `json:"done"`
}

// Sign returns the X-Mailwarden-Signature value of body under secret.
// Receivers compute the same over the raw body they read and compare
// with hmac.Equal.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

type webhook struct {
	url    string
	name   string // the URL without credentials or query, for logs
	secret []byte
	client *http.Client
}

func newWebhook(w config.Webhook, timeout time.Duration) *webhook {
	return &webhook{
		url: w.URL, name: redactURL(w.URL), secret: []byte(w.Secret),
		client: &http.Client{
			Timeout: timeout,
			// A redirect would turn the POST into a GET: report it instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// redactURL keeps the scheme, host and path: a token in the query or the
// user info must not reach the log.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// webhookBody encodes x; the evidence is left out of the JSON (and said
// so) only when it cannot be encoded.
func webhookBody(x *Notice) []byte {
	b := WebhookBody{
		Event: EventIncident, ID: x.ID, Node: x.Node, Detector: x.Detector, Account: x.Account, IP: x.IP,
		Action: x.Action, DryRun: x.DryRun, DetectedAt: x.DetectedAt.UTC(), Summary: x.Summary,
		Evidence: x.Evidence, Done: x.Done,
	}
	if b.Evidence == nil {
		b.Evidence = map[string]any{}
	}
	if b.Done == nil {
		b.Done = []string{}
	}
	enc := func() ([]byte, error) {
		var buf bytes.Buffer
		e := json.NewEncoder(&buf)
		e.SetEscapeHTML(false)
		err := e.Encode(b)
		return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), err
	}
	out, err := enc()
	if err != nil {
		rows, tables := layoutEvidence(x.Evidence)
		b.Evidence = map[string]any{"unencodable": err.Error(), "text": evidenceText(rows, tables)}
		out, _ = enc()
	}
	return out
}

// deliveryID is the idempotency header's value: "incident-<id>[-<node>]"
// with the node reduced to characters safe in a header.
func deliveryID(x *Notice) string {
	id := fmt.Sprintf("incident-%d", x.ID)
	node := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' {
			return r
		}
		return -1
	}, x.Node)
	if node != "" {
		id += "-" + clip(node, 64)
	}
	return id
}

// send POSTs the notice. 2xx is success; 408, 429 and 5xx (and network
// errors) are retried; any other status is refused for good.
func (w *webhook) send(ctx context.Context, j *job) error {
	if j.msg == nil {
		j.msg = webhookBody(&j.n)
		j.sig = Sign(w.secret, j.msg)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(j.msg))
	if err != nil {
		return permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mailwarden")
	req.Header.Set(HeaderSignature, j.sig)
	req.Header.Set(HeaderEvent, EventIncident)
	req.Header.Set(HeaderDelivery, deliveryID(&j.n))
	resp, err := w.client.Do(req)
	if err != nil {
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = fmt.Errorf("%s: %w", ue.Op, ue.Err) // without the URL: its query may hold a token
		}
		return err
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("HTTP %s: %s", resp.Status, clip(display(strings.TrimSpace(string(head))), 200))
	if httpStatusRetry(resp.StatusCode) {
		return err
	}
	return permanent(err)
}
