package events

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// WebhookConfig says where events are POSTed and how they are signed.
type WebhookConfig struct {
	URLs        []string
	Queue       int    // events waiting per URL; default 1000
	Key, Secret string // API key named in X-Parley-Key; its secret signs
	// Timeout of one POST (default 5s) and the waits before the retries
	// (default 1, 2, 4, 8, 16 s); tests shorten them.
	Timeout time.Duration
	Backoff []time.Duration
}

// Validate fills defaults and names the first bad key.
func (c *WebhookConfig) Validate() error {
	for _, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("webhooks.urls: %q is not an http(s) URL", u)
		}
	}
	if c.Queue < 0 {
		return fmt.Errorf("webhooks.queue: %d is negative", c.Queue)
	}
	if c.Queue == 0 {
		c.Queue = 1000
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Backoff == nil {
		c.Backoff = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}
	}
	return nil
}

// Webhooks POSTs events to every configured URL, each from its own
// bounded queue, so that a receiver that is slow or down delays nobody.
type Webhooks struct {
	cfg      WebhookConfig
	log      *slog.Logger
	client   *http.Client
	senders  []*sender
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	dropped  atomic.Uint64
	failures atomic.Uint64
	sent     atomic.Uint64
}

type sender struct {
	url  string
	mu   sync.Mutex
	q    []queuedEvent
	wake chan struct{}
}

type queuedEvent struct {
	id   int64
	body []byte
}

// NewWebhooks starts one sender per URL; Close stops them.
func NewWebhooks(cfg WebhookConfig, log *slog.Logger) (*Webhooks, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Webhooks{cfg: cfg, log: log, client: &http.Client{Timeout: cfg.Timeout}, ctx: ctx, cancel: cancel}
	for _, u := range cfg.URLs {
		s := &sender{url: u, wake: make(chan struct{}, 1)}
		w.senders = append(w.senders, s)
		w.wg.Add(1)
		go w.run(s)
	}
	return w, nil
}

// Enqueue queues an event for every URL without blocking; a full queue
// drops its oldest event. It suits Bus.OnEvent.
func (w *Webhooks) Enqueue(e Event, body []byte) {
	for _, s := range w.senders {
		s.mu.Lock()
		if len(s.q) >= w.cfg.Queue {
			s.q = s.q[1:]
			w.dropped.Add(1)
		}
		s.q = append(s.q, queuedEvent{id: e.ID, body: body})
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Stats: events given up (queue full or every retry failed), failed
// attempts, and events delivered.
func (w *Webhooks) Stats() (dropped, failures, sent uint64) {
	return w.dropped.Load(), w.failures.Load(), w.sent.Load()
}

// Close stops the senders; events still queued are not sent.
func (w *Webhooks) Close() {
	w.cancel()
	w.wg.Wait()
}

func (w *Webhooks) run(s *sender) {
	defer w.wg.Done()
	for {
		s.mu.Lock()
		var next *queuedEvent
		if len(s.q) > 0 {
			q := s.q[0]
			s.q = s.q[1:]
			next = &q
		}
		s.mu.Unlock()
		if next == nil {
			select {
			case <-s.wake:
				continue
			case <-w.ctx.Done():
				return
			}
		}
		w.deliver(s.url, *next)
		if w.ctx.Err() != nil {
			return
		}
	}
}

// deliver POSTs one event, retrying with backoff; it gives up after the
// last retry or when the webhooks close.
func (w *Webhooks) deliver(u string, q queuedEvent) {
	for attempt := 0; ; attempt++ {
		err := w.post(u, q)
		if err == nil {
			w.sent.Add(1)
			return
		}
		w.failures.Add(1)
		if attempt >= len(w.cfg.Backoff) {
			w.dropped.Add(1)
			w.log.Warn("webhook: giving up on an event", "url", u, "event", q.id, "err", err)
			return
		}
		if attempt == 0 {
			w.log.Info("webhook: delivery failed; retrying", "url", u, "event", q.id, "err", err)
		}
		select {
		case <-time.After(w.cfg.Backoff[attempt]):
		case <-w.ctx.Done():
			return
		}
	}
}

func (w *Webhooks) post(u string, q queuedEvent) error {
	req, err := http.NewRequestWithContext(w.ctx, http.MethodPost, u, bytes.NewReader(q.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Parley-Event-Id", strconv.FormatInt(q.id, 10))
	req.Header.Set("X-Parley-Key", w.cfg.Key)
	req.Header.Set("X-Parley-Signature", Sign(w.cfg.Secret, q.body))
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("receiver answered %s", resp.Status)
	}
	return nil
}

// Sign is the X-Parley-Signature of body: "sha256=" and the hex
// HMAC-SHA256 with the API secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}
