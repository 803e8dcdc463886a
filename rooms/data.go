package rooms

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/parley-rtc/parley/limit"
	"github.com/parley-rtc/parley/sfu"
)

// The data channel protocol (docs/protocol.md, "Data channels"): the
// server is the authority that fans messages out, keeps chat history,
// de-duplicates and enforces limits. Messages of one room are handled
// under Room.dmu, so every participant sees them in the same order.

// dataPort is a participant's end of its two data channels (*sfu.Data).
type dataPort interface {
	Send(msg string, stall time.Duration) error
	SendLossy(msg string) error
}

// Queue lengths of a participant's outgoing data messages. A client whose
// reliable queue fills does not read and is disconnected; lossy messages
// are dropped instead.
const (
	dataQueueLen  = 1024
	lossyQueueLen = 256
)

// Error codes on the data channels.
const (
	DataBadRequest         = "bad_request"
	DataUnknownType        = "unknown_type"
	DataTooLarge           = "too_large"
	DataRateLimited        = "rate_limited"
	DataPermissionDenied   = "permission_denied"
	DataUnknownParticipant = "unknown_participant"
)

// Messages the server sends.
type (
	presenceMsg struct {
		Type        string   `json:"type"`
		Participant Presence `json:"participant"`
	}
	presenceLeftMsg struct {
		Type     string `json:"type"`
		Identity string `json:"identity"`
		SID      string `json:"sid"`
	}
	rosterMsg struct {
		Type         string     `json:"type"`
		Self         string     `json:"self"`
		Participants []Presence `json:"participants"`
		Limits       dataLimits `json:"limits"`
	}
	dataLimits struct {
		MaxMessageBytes     int   `json:"max_message_bytes"`
		MaxMetadataBytes    int   `json:"max_metadata_bytes"`
		RateLimit           int   `json:"rate_limit"`
		RateWindowMS        int64 `json:"rate_window_ms"`
		LossyRateLimit      int   `json:"lossy_rate_limit"`
		HeartbeatIntervalMS int64 `json:"heartbeat_interval_ms"`
		TypingTimeoutMS     int64 `json:"typing_timeout_ms"`
	}
	historyMsg struct {
		Type     string        `json:"type"`
		Messages []ChatMessage `json:"messages"`
	}
	chatAckMsg struct {
		Type      string `json:"type"`
		ID        string `json:"id"`
		TS        int64  `json:"ts"`
		Duplicate bool   `json:"duplicate,omitempty"`
	}
	appDataMsg struct {
		Type    string          `json:"type"`
		From    string          `json:"from"`
		FromSID string          `json:"from_sid"`
		Topic   string          `json:"topic,omitempty"`
		Payload json.RawMessage `json:"payload"`
	}
	pointerMsg struct {
		Type     string  `json:"type"`
		From     string  `json:"from"`
		FromSID  string  `json:"from_sid"`
		TrackSID string  `json:"track_sid"`
		X        float64 `json:"x"`
		Y        float64 `json:"y"`
	}
	dataErrorMsg struct {
		Type         string `json:"type"`
		Code         string `json:"code"`
		Message      string `json:"message"`
		Request      string `json:"request,omitempty"`
		ID           string `json:"id,omitempty"`
		RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
	}
)

// Messages clients send, one struct per type.
type (
	dataHead struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	}
	chatIn struct {
		ID   string `json:"id"`
		Text string `json:"text"`
		To   string `json:"to"`
	}
	presenceIn struct {
		Away     *bool           `json:"away"`
		Hand     *bool           `json:"hand"`
		Typing   *bool           `json:"typing"`
		Metadata json.RawMessage `json:"metadata"` // absent: nil; null: "null"
	}
	appDataIn struct {
		Topic   string          `json:"topic"`
		Payload json.RawMessage `json:"payload"`
		To      []string        `json:"to"`
	}
	pointerIn struct {
		TrackSID string   `json:"track_sid"`
		X        *float64 `json:"x"`
		Y        *float64 `json:"y"`
	}
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_.:\-]{1,64}$`)

const maxTopicLen = 128

// encode renders a server message once, for every recipient.
func encode(v any) string {
	b, err := json.Marshal(v)
	if err != nil { // only RawMessage fields can fail, and they are checked
		panic(fmt.Sprintf("rooms: encode %T: %v", v, err))
	}
	return string(b)
}

// dataError is a refusal of one client message; the channel stays open.
type dataError struct {
	code, msg string
	retry     time.Duration
}

func (e *dataError) Error() string { return e.code + ": " + e.msg }

func refuse(code, format string, args ...any) error {
	return &dataError{code: code, msg: fmt.Sprintf(format, args...)}
}

// ---- the participant's channels ----

// attachData is called when p's reliable channel has opened: p starts
// receiving room updates, after the roster and its history.
func (p *Participant) attachData(port dataPort) {
	r := p.room
	if r == nil || p.left.Load() {
		return
	}
	r.dmu.Lock()
	defer r.dmu.Unlock()
	if e, ok := r.presence[p.identity]; !ok || e.part != p || p.dataReady {
		return
	}
	p.dataReady = true
	r.ready = append(r.ready, p)
	go p.writeData(port)
	go p.writeLossy(port)
	cfg := &r.mgr.cfg.Data
	p.enqueue(encode(rosterMsg{Type: "roster", Self: p.identity, Participants: r.rosterLocked(), Limits: dataLimits{
		MaxMessageBytes: cfg.MaxMessageBytes, MaxMetadataBytes: cfg.MaxMetadataBytes,
		RateLimit: cfg.RateLimit, RateWindowMS: cfg.RateWindow.Milliseconds(), LossyRateLimit: cfg.LossyRateLimit,
		HeartbeatIntervalMS: cfg.heartbeatInterval().Milliseconds(), TypingTimeoutMS: cfg.TypingTimeout.Milliseconds(),
	}}))
	p.enqueue(encode(historyMsg{Type: "history", Messages: r.chat.history(p.identity)}))
}

// detachDataLocked stops sending p room updates.
func (r *Room) detachDataLocked(p *Participant) {
	if !p.dataReady {
		return
	}
	p.dataReady = false
	for i, x := range r.ready {
		if x == p {
			r.ready = append(r.ready[:i:i], r.ready[i+1:]...)
			break
		}
	}
}

// enqueue queues one reliable message for p without blocking. A client
// whose queue is full is not reading and is disconnected.
func (p *Participant) enqueue(msg string) {
	if !p.dq.Push(msg) {
		if p.dataOverflow.CompareAndSwap(false, true) {
			go p.fail("slow_client", fmt.Errorf("%w: %d data messages waiting", sfu.ErrDataStalled, dataQueueLen))
		}
	}
}

// enqueueLossy queues one lossy message, or drops it.
func (p *Participant) enqueueLossy(msg string) {
	p.lq.Push(msg) // full: dropped
}

func (p *Participant) writeData(port dataPort) {
	stall := p.room.mgr.cfg.Data.StallTimeout
	send := func(msg string) bool { return p.sendData(port, msg, stall) }
	for {
		select {
		case <-p.dataDone:
			return
		case <-p.dq.Ready():
			if !p.dq.Drain(p.dataDone, send) {
				return
			}
		}
	}
}

// sendData writes one reliable message; false ends the writer.
func (p *Participant) sendData(port dataPort, msg string, stall time.Duration) bool {
	err := port.Send(msg, stall)
	switch {
	case err == nil:
		return true
	case errors.Is(err, sfu.ErrDataStalled):
		go p.fail("slow_client", err)
	default: // the channel closed; media may go on
		r := p.room
		r.dmu.Lock()
		r.detachDataLocked(p)
		r.dmu.Unlock()
	}
	return false
}

func (p *Participant) writeLossy(port dataPort) {
	send := func(msg string) bool {
		_ = port.SendLossy(msg) // lossy: a busy channel drops
		return true
	}
	for {
		select {
		case <-p.dataDone:
			return
		case <-p.lq.Ready():
			p.lq.Drain(p.dataDone, send)
		}
	}
}

// ---- messages from the client ----

// handleData handles one message from p's reliable or (lossy) lossy
// channel. Calls for one channel come one at a time.
func (p *Participant) handleData(lossy bool, raw []byte) {
	r := p.room
	if r == nil || p.left.Load() {
		return
	}
	now := time.Now()
	var head dataHead
	err := r.dataMessage(p, lossy, raw, &head, now)
	r.mgr.countData(head.Type)
	if err == nil {
		return
	}
	var de *dataError
	if !errors.As(err, &de) {
		de = &dataError{code: DataBadRequest, msg: err.Error()}
	}
	if lossy {
		// Lossy traffic can be fast: at most one error a second.
		if now.Sub(p.lossyErrAt) < time.Second {
			return
		}
		p.lossyErrAt = now
	}
	p.enqueue(encode(dataErrorMsg{Type: "error", Code: de.code, Message: de.msg, Request: head.Type, ID: head.ID,
		RetryAfterMS: de.retry.Milliseconds()}))
}

func (r *Room) dataMessage(p *Participant, lossy bool, raw []byte, head *dataHead, now time.Time) error {
	cfg := &r.mgr.cfg.Data
	// The head is read even from a message that is too large (at most
	// sfu.MaxDataMessage), so that the refusal names it.
	if err := json.Unmarshal(raw, head); err != nil && len(raw) <= cfg.MaxMessageBytes {
		return refuse(DataBadRequest, "not a JSON object {\"type\": ...}: %v", err)
	}
	if head.Type == "heartbeat" && len(raw) <= cfg.MaxMessageBytes {
		r.touch(p, now)
		return nil
	}
	// Every other message counts, so that a flood of bad or big ones is
	// throttled too.
	if ok, wait := p.limiter(lossy).Allow(now); !ok {
		if lossy {
			return &dataError{code: DataRateLimited, msg: fmt.Sprintf("more than %d lossy messages a second; dropped", cfg.LossyRateLimit)}
		}
		return &dataError{code: DataRateLimited, retry: wait,
			msg: fmt.Sprintf("more than %d messages in %s; wait and send again", cfg.RateLimit, cfg.RateWindow)}
	}
	if len(raw) > cfg.MaxMessageBytes {
		return refuse(DataTooLarge, "%d bytes is over data.max_message_bytes (%d)", len(raw), cfg.MaxMessageBytes)
	}
	r.touch(p, now)
	switch head.Type {
	case "chat":
		return r.chatIn(p, raw, now)
	case "presence":
		return r.presenceIn(p, raw, now)
	case "data":
		return r.appDataIn(p, lossy, raw)
	case "pointer":
		return r.pointerIn(p, raw)
	}
	return refuse(DataUnknownType, "unknown message type %q", head.Type)
}

// dataTypes are the data message types counted for metrics; anything else
// counts as "other".
var dataTypes = [...]string{"chat", "presence", "data", "pointer", "heartbeat", "other"}

func (m *Manager) countData(typ string) {
	for i, t := range dataTypes[:len(dataTypes)-1] {
		if t == typ {
			m.dataCounts[i].Add(1)
			return
		}
	}
	m.dataCounts[len(dataTypes)-1].Add(1)
}

// DataStats counts the data channel messages handled, by type.
func (m *Manager) DataStats() map[string]uint64 {
	out := make(map[string]uint64, len(dataTypes))
	for i, t := range dataTypes {
		out[t] = m.dataCounts[i].Load()
	}
	return out
}

func (p *Participant) limiter(lossy bool) *limit.Window {
	if lossy {
		return p.lossyLimit
	}
	return p.dataLimit
}

// touch notes that p's client is alive; a participant that was away for
// lack of heartbeats is online again.
func (r *Room) touch(p *Participant, now time.Time) {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	e, ok := r.presence[p.identity]
	if !ok || e.part != p {
		return
	}
	e.lastSeen = now
	if e.status(now, r.mgr.cfg.Data.AwayAfter) != e.Status {
		r.presenceChangedLocked(e, now)
	}
}

func needData(p *Participant) error {
	if !p.Grants().Data {
		return refuse(DataPermissionDenied, "the token has no data grant")
	}
	return nil
}

func decodeIn(raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return refuse(DataBadRequest, "%v", err)
	}
	return nil
}

func (r *Room) chatIn(p *Participant, raw []byte, now time.Time) error {
	if err := needData(p); err != nil {
		return err
	}
	var in chatIn
	if err := decodeIn(raw, &in); err != nil {
		return err
	}
	if !idPattern.MatchString(in.ID) {
		return refuse(DataBadRequest, "id must be 1-64 letters, digits, '-', '_', '.' or ':'")
	}
	if strings.TrimSpace(in.Text) == "" {
		return refuse(DataBadRequest, "text is empty")
	}
	msg := ChatMessage{Type: "chat", ID: in.ID, From: p.identity, FromName: p.Name(), FromSID: p.sid, To: in.To, Text: in.Text, TS: now.UnixMilli()}
	r.dmu.Lock()
	defer r.dmu.Unlock()
	var target *presence
	if in.To != "" {
		var ok bool
		if target, ok = r.presence[in.To]; !ok {
			return refuse(DataUnknownParticipant, "nobody in the room has identity %q", in.To)
		}
	}
	ts, dup, foreign := r.chat.add(msg)
	if foreign {
		return refuse(DataBadRequest, "id %q is taken by another participant's message", in.ID)
	}
	p.enqueue(encode(chatAckMsg{Type: "chat_ack", ID: in.ID, TS: ts, Duplicate: dup}))
	if dup {
		return nil
	}
	if r.store != nil {
		r.store.Append(r.name, msg)
	}
	out := encode(msg)
	if target == nil {
		r.broadcastLocked(out, p)
	} else if target.part != nil && target.part.dataReady && target.part != p {
		target.part.enqueue(out)
	}
	return nil
}

func (r *Room) presenceIn(p *Participant, raw []byte, now time.Time) error {
	var in presenceIn
	if err := decodeIn(raw, &in); err != nil {
		return err
	}
	if in.Hand != nil || in.Typing != nil || in.Metadata != nil {
		if err := needData(p); err != nil {
			return err
		}
	}
	cfg := &r.mgr.cfg.Data
	if len(in.Metadata) > cfg.MaxMetadataBytes {
		return refuse(DataTooLarge, "metadata of %d bytes is over data.max_metadata_bytes (%d)", len(in.Metadata), cfg.MaxMetadataBytes)
	}
	r.dmu.Lock()
	defer r.dmu.Unlock()
	e, ok := r.presence[p.identity]
	if !ok || e.part != p {
		return nil
	}
	changed := false
	if in.Away != nil && *in.Away != e.away {
		e.away, changed = *in.Away, true
	}
	if in.Hand != nil && *in.Hand != e.Hand {
		e.Hand, changed = *in.Hand, true
	}
	if in.Typing != nil {
		if *in.Typing {
			e.typingUntil = now.Add(cfg.TypingTimeout)
		}
		if *in.Typing != e.Typing {
			e.Typing, changed = *in.Typing, true
		}
	}
	if in.Metadata != nil {
		md := in.Metadata
		if string(md) == "null" {
			md = nil
		}
		if string(md) != string(e.Metadata) {
			e.Metadata, changed = append(json.RawMessage(nil), md...), true
		}
	}
	if changed || e.status(now, cfg.AwayAfter) != e.Status {
		r.presenceChangedLocked(e, now)
	}
	return nil
}

func (r *Room) appDataIn(p *Participant, lossy bool, raw []byte) error {
	if err := needData(p); err != nil {
		return err
	}
	var in appDataIn
	if err := decodeIn(raw, &in); err != nil {
		return err
	}
	if len(in.Payload) == 0 {
		return refuse(DataBadRequest, "payload is missing")
	}
	if len(in.Topic) > maxTopicLen {
		return refuse(DataBadRequest, "topic is longer than %d bytes", maxTopicLen)
	}
	out := encode(appDataMsg{Type: "data", From: p.identity, FromSID: p.sid, Topic: in.Topic, Payload: in.Payload})
	send := (*Participant).enqueue
	if lossy {
		send = (*Participant).enqueueLossy
	}
	r.dmu.Lock()
	defer r.dmu.Unlock()
	if len(in.To) == 0 {
		for _, x := range r.ready {
			if x != p {
				send(x, out)
			}
		}
		return nil
	}
	var unknown []string
	for _, id := range in.To {
		if _, ok := r.presence[id]; !ok {
			unknown = append(unknown, id)
		}
	}
	if len(unknown) > 0 {
		return refuse(DataUnknownParticipant, "nobody in the room has identity %s; nothing was sent", strings.Join(unknown, ", "))
	}
	for i, id := range in.To {
		if x := r.presence[id].part; x != nil && x.dataReady && x != p && !containsBefore(in.To, i, id) {
			send(x, out)
		}
	}
	return nil
}

// containsBefore reports whether list[:i] holds s (a repeated name gets
// one copy).
func containsBefore(list []string, i int, s string) bool {
	for _, x := range list[:i] {
		if x == s {
			return true
		}
	}
	return false
}

func (r *Room) pointerIn(p *Participant, raw []byte) error {
	if err := needData(p); err != nil {
		return err
	}
	var in pointerIn
	if err := decodeIn(raw, &in); err != nil {
		return err
	}
	if in.X == nil || in.Y == nil || *in.X < 0 || *in.X > 1 || *in.Y < 0 || *in.Y > 1 {
		return refuse(DataBadRequest, "x and y must be fractions from 0 to 1")
	}
	r.dmu.Lock()
	defer r.dmu.Unlock()
	if _, ok := r.screens[in.TrackSID]; !ok {
		return nil // not (or no longer) a screen share: dropped
	}
	out := encode(pointerMsg{Type: "pointer", From: p.identity, FromSID: p.sid, TrackSID: in.TrackSID, X: *in.X, Y: *in.Y})
	for _, x := range r.ready {
		if x != p {
			x.enqueueLossy(out)
		}
	}
	return nil
}

// broadcastLocked queues msg for every participant whose channel is open,
// but except.
func (r *Room) broadcastLocked(msg string, except *Participant) {
	for _, x := range r.ready {
		if x != except {
			x.enqueue(msg)
		}
	}
}
