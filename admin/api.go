// Package admin serves the admin API of docs/api.md: rooms and
// participants as JSON, actions on them, and the room events as
// Server-Sent Events, all behind admin tokens.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/parley-rtc/parley/events"
	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/signaling"
)

// Totals are the server-wide counters the event stream reports every few
// seconds (its stats event).
type Totals struct {
	Rooms, Participants, PublishedTracks, SubscribedTracks int
	PacketsIn, PacketsOut, BytesIn, BytesOut               uint64
}

// Config of the API.
type Config struct {
	Rooms  *rooms.Manager
	Bus    *events.Bus
	Tokens *signaling.Server // verifies tokens; mints the development admin token
	Totals func() Totals
	Log    *slog.Logger
	// Cluster, when this server is one node of several, makes the API
	// cover every room of the cluster (cluster.go); nil for one node.
	Cluster Cluster
	// StatsInterval is how often the stream sends stats (default 2s);
	// PingInterval how often it sends a keep-alive comment (default 15s).
	StatsInterval, PingInterval time.Duration
}

// API is the admin API.
type API struct {
	cfg    Config
	client *http.Client    // forwards requests to other nodes
	ctx    context.Context // ends the event streams on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New makes the API; Register puts it on a mux.
func New(cfg Config) *API {
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = 2 * time.Second
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 15 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &API{cfg: cfg, ctx: ctx, cancel: cancel, client: &http.Client{Timeout: forwardTimeout}}
}

// Close ends the event streams (so that an HTTP shutdown need not wait
// for them) and waits for them.
func (a *API) Close() {
	a.cancel()
	a.wg.Wait()
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/rooms", a.listRooms)
	mux.HandleFunc("POST /api/rooms", a.createRoom)
	mux.HandleFunc("GET /api/rooms/{room}", a.getRoom)
	mux.HandleFunc("DELETE /api/rooms/{room}", a.closeRoom)
	mux.HandleFunc("DELETE /api/rooms/{room}/participants/{identity}", a.removeParticipant)
	mux.HandleFunc("PATCH /api/rooms/{room}/participants/{identity}", a.updateParticipant)
	mux.HandleFunc("POST /api/rooms/{room}/participants/{identity}/tracks/{track}/mute", a.muteTrack)
	mux.HandleFunc("GET /api/nodes", a.listNodes)
	mux.HandleFunc("GET /api/events", a.events)
	mux.HandleFunc("GET /api/dev-admin-token", a.devAdminToken)
}

// apiError is an error answer.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

func fail(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func writeError(w http.ResponseWriter, err error) {
	var e *apiError
	if !errors.As(err, &e) {
		e = roomsError(err)
	}
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
	}
	writeJSON(w, e.status, map[string]any{"error": map[string]string{"code": e.code, "message": e.message}})
}

// roomsError maps the rooms package's errors to answers.
func roomsError(err error) *apiError {
	switch {
	case errors.Is(err, rooms.ErrNoRoom), errors.Is(err, rooms.ErrNoParticipant), errors.Is(err, rooms.ErrUnknownTrack):
		return fail(http.StatusNotFound, "not_found", "%v", err)
	case errors.Is(err, rooms.ErrRoomExists):
		return fail(http.StatusConflict, "conflict", "%v", err)
	case errors.Is(err, rooms.ErrDraining), errors.Is(err, rooms.ErrClosed):
		return fail(http.StatusServiceUnavailable, "draining", "%v", err)
	case errors.Is(err, rooms.ErrTooManyRooms):
		return fail(http.StatusServiceUnavailable, "too_many_rooms", "%v", err)
	case errors.Is(err, rooms.ErrBadConfig), errors.Is(err, rooms.ErrBadDescription):
		return fail(http.StatusBadRequest, "bad_request", "%v", err)
	}
	return fail(http.StatusInternalServerError, "internal", "%v", err)
}

// scope is what an admin token may see: every room, or one.
type scope struct{ room string }

func (s scope) allows(room string) bool { return s.room == "*" || s.room == room }

// authorize checks the request's admin token; query allows
// ?access_token= (for EventSource, which cannot set headers).
func (a *API) authorize(r *http.Request, query bool) (scope, error) {
	tok := ""
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return scope{}, fail(http.StatusUnauthorized, "unauthorized", "use Authorization: Bearer <admin token> (parley token --admin)")
		}
		tok = strings.TrimSpace(rest)
	} else if query {
		tok = r.URL.Query().Get("access_token")
	}
	if tok == "" {
		return scope{}, fail(http.StatusUnauthorized, "unauthorized", "an admin token is required: Authorization: Bearer <token> (parley token --admin)")
	}
	claims, err := a.cfg.Tokens.Verify(tok)
	if err != nil {
		return scope{}, fail(http.StatusUnauthorized, "unauthorized", "%v", err)
	}
	if !claims.Grants.Admin {
		return scope{}, fail(http.StatusForbidden, "forbidden", "the token has no admin grant")
	}
	return scope{room: claims.Room}, nil
}

// authorizeRoom also checks that the token covers the request's room.
func (a *API) authorizeRoom(r *http.Request) (string, error) {
	s, err := a.authorize(r, false)
	if err != nil {
		return "", err
	}
	room := r.PathValue("room")
	if !s.allows(room) {
		return "", fail(http.StatusForbidden, "forbidden", "the token is for room %q only", s.room)
	}
	return room, nil
}

// maxBody is the largest request body.
const maxBody = 64 << 10

// decodeBody reads a JSON body of at most maxBody, refusing unknown fields.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fail(http.StatusBadRequest, "bad_request", "body: %v", err)
	}
	return nil
}

func (a *API) listRooms(w http.ResponseWriter, r *http.Request) {
	s, err := a.authorize(r, false)
	if err != nil {
		writeError(w, err)
		return
	}
	list, incomplete := a.allRooms(r.Context(), r, false)
	out := []rooms.RoomDetails{}
	for _, d := range list {
		if s.allows(d.Name) {
			out = append(out, d)
		}
	}
	answer := map[string]any{"rooms": out}
	if incomplete != nil {
		// This node's rooms are still worth showing.
		answer["incomplete"] = fmt.Sprintf("only this node's rooms: %v", incomplete)
	}
	writeJSON(w, http.StatusOK, answer)
}

// defaultEmptyTimeout is how long a room created through the API waits
// for its participants, unless the request says otherwise.
const defaultEmptyTimeout = 300

func (a *API) createRoom(w http.ResponseWriter, r *http.Request) {
	s, err := a.authorize(r, false)
	if err != nil {
		writeError(w, err)
		return
	}
	var body struct {
		Name                string `json:"name"`
		MaxParticipants     int    `json:"max_participants"`
		EmptyTimeoutSeconds *int64 `json:"empty_timeout_seconds"`
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, fail(http.StatusBadRequest, "bad_request", "body: %v", err))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	if err := decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	if body.Name == "" || len(body.Name) > 256 || body.Name == "*" {
		writeError(w, fail(http.StatusBadRequest, "bad_request", "name: 1-256 bytes, not *"))
		return
	}
	if !s.allows(body.Name) {
		writeError(w, fail(http.StatusForbidden, "forbidden", "the token is for room %q only", s.room))
		return
	}
	timeout := int64(defaultEmptyTimeout)
	if body.EmptyTimeoutSeconds != nil {
		timeout = *body.EmptyTimeoutSeconds
	}
	if body.MaxParticipants < 0 || timeout < 0 {
		writeError(w, fail(http.StatusBadRequest, "bad_request", "max_participants and empty_timeout_seconds must not be negative"))
		return
	}
	if c := a.cluster(r); c != nil {
		// The room goes where a join would put it.
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		node, url, err := c.Place(ctx, body.Name)
		cancel()
		if err != nil {
			writeError(w, clusterError(err))
			return
		}
		if node != c.NodeID() {
			a.forward(w, r, body.Name, node, url, raw)
			return
		}
	}
	d, err := a.cfg.Rooms.CreateRoom(body.Name, rooms.RoomOptions{MaxParticipants: body.MaxParticipants, EmptyTimeout: time.Duration(timeout) * time.Second})
	if err != nil {
		writeError(w, err)
		return
	}
	if a.cfg.Cluster != nil {
		d.Node = a.cfg.Cluster.NodeID()
	}
	writeJSON(w, http.StatusCreated, d)
}

func (a *API) getRoom(w http.ResponseWriter, r *http.Request) {
	room, err := a.authorizeRoom(r)
	if err != nil {
		writeError(w, err)
		return
	}
	d, err := a.cfg.Rooms.RoomDetails(room)
	if err == nil {
		if a.cfg.Cluster != nil {
			d.Node = a.cfg.Cluster.NodeID()
		}
		writeJSON(w, http.StatusOK, d)
		return
	}
	if c := a.cluster(r); c != nil {
		// Another node's room, as it last reported it.
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		rd, ok, cerr := c.RemoteRoom(ctx, room)
		cancel()
		switch {
		case cerr != nil:
			err = clusterError(cerr)
		case ok:
			writeJSON(w, http.StatusOK, rd)
			return
		case a.forwardRoom(w, r, room):
			return // placed elsewhere, not reported yet: its node answers
		}
	}
	writeError(w, err)
}

func (a *API) closeRoom(w http.ResponseWriter, r *http.Request) {
	room, err := a.authorizeRoom(r)
	if err == nil && a.forwardRoom(w, r, room) {
		return
	}
	if err == nil {
		err = a.cfg.Rooms.CloseRoom(room)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	a.cfg.Log.Info("room closed by an administrator", "room", room)
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) removeParticipant(w http.ResponseWriter, r *http.Request) {
	room, err := a.authorizeRoom(r)
	if err == nil && a.forwardRoom(w, r, room) {
		return
	}
	if err == nil {
		err = a.cfg.Rooms.RemoveParticipant(room, r.PathValue("identity"))
	}
	if err != nil {
		writeError(w, err)
		return
	}
	a.cfg.Log.Info("participant removed by an administrator", "room", room, "identity", r.PathValue("identity"))
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) muteTrack(w http.ResponseWriter, r *http.Request) {
	room, err := a.authorizeRoom(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if a.forwardRoom(w, r, room) {
		return
	}
	var body struct {
		Muted *bool `json:"muted"`
	}
	if err := decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	if body.Muted == nil {
		writeError(w, fail(http.StatusBadRequest, "bad_request", "body: {\"muted\": true or false}"))
		return
	}
	info, err := a.cfg.Rooms.MuteTrack(room, r.PathValue("identity"), r.PathValue("track"), *body.Muted)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (a *API) updateParticipant(w http.ResponseWriter, r *http.Request) {
	room, err := a.authorizeRoom(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if a.forwardRoom(w, r, room) {
		return
	}
	var body struct {
		Name     *string         `json:"name"`
		Metadata json.RawMessage `json:"metadata"`
		Grants   *rooms.Grants   `json:"grants"`
	}
	if err := decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	if body.Grants != nil && body.Grants.Admin {
		writeError(w, fail(http.StatusBadRequest, "bad_request", "the admin grant cannot be given to a participant"))
		return
	}
	d, err := a.cfg.Rooms.UpdateParticipant(room, r.PathValue("identity"), rooms.ParticipantUpdate{Name: body.Name, Metadata: body.Metadata, Grants: body.Grants})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (a *API) devAdminToken(w http.ResponseWriter, r *http.Request) {
	tok, ok, err := a.cfg.Tokens.DevAdminToken(12 * time.Hour)
	switch {
	case !ok:
		http.NotFound(w, r)
	case err != nil:
		writeError(w, fail(http.StatusInternalServerError, "internal", "%v", err))
	default:
		writeJSON(w, http.StatusOK, map[string]string{"token": tok})
	}
}
