package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/parley-rtc/parley/rooms"
)

// streamWriteTimeout bounds one write to an event stream: a client that
// does not read is dropped, never waited for.
const streamWriteTimeout = 10 * time.Second

type snapshot struct {
	LastEventID int64               `json:"last_event_id"`
	Rooms       []rooms.RoomDetails `json:"rooms"`
}

type statsEvent struct {
	Time             int64  `json:"time"`
	Rooms            int    `json:"rooms"`
	Participants     int    `json:"participants"`
	PublishedTracks  int    `json:"published_tracks"`
	SubscribedTracks int    `json:"subscribed_tracks"`
	PacketsIn        uint64 `json:"packets_in"`
	PacketsOut       uint64 `json:"packets_out"`
	BitrateIn        uint64 `json:"bitrate_in_bps"`
	BitrateOut       uint64 `json:"bitrate_out_bps"`
}

// events streams room events (docs/api.md, "Events"): a snapshot or the
// events missed since Last-Event-ID, then live events, stats and pings.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	s, err := a.authorize(r, true)
	if err != nil {
		writeError(w, err)
		return
	}
	last := int64(-1)
	for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("last_event_id")} {
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, fail(http.StatusBadRequest, "bad_request", "last event id %q is not a number", v))
			return
		}
		last = n
		break
	}
	a.wg.Add(1)
	defer a.wg.Done()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)

	write := func(event string, id int64, data any) bool {
		b, err := json.Marshal(data)
		if err != nil {
			return false
		}
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if id > 0 {
			_, err = fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", id, event, b)
		} else {
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		}
		return err == nil
	}
	flush := func() bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		return rc.Flush() == nil
	}

	if last < 0 {
		last = a.cfg.Bus.Last()
		snap := snapshot{LastEventID: last, Rooms: []rooms.RoomDetails{}}
		list, _ := a.allRooms(r.Context(), r, true) // a cluster that does not answer leaves this node's
		for _, d := range list {
			if s.allows(d.Name) {
				snap.Rooms = append(snap.Rooms, d)
			}
		}
		if !write("snapshot", 0, snap) {
			return
		}
	}
	if newest := a.cfg.Bus.Last(); last > newest {
		// An id from before a restart: the client's state is not ours.
		if !write("reset", 0, map[string]int64{"oldest": a.cfg.Bus.Oldest()}) {
			return
		}
		last = newest
	}
	stats := time.NewTicker(a.cfg.StatsInterval)
	defer stats.Stop()
	ping := time.NewTicker(a.cfg.PingInterval)
	defer ping.Stop()
	prev, prevAt := a.totals(), time.Now()
	if !write("stats", 0, statsOf(prev, prev, 0, prevAt)) {
		return
	}
	for {
		evs, changed, missed := a.cfg.Bus.After(last)
		if missed {
			if !write("reset", 0, map[string]int64{"oldest": a.cfg.Bus.Oldest()}) {
				return
			}
		}
		for _, ev := range evs {
			last = ev.ID
			if s.allows(ev.Room) && !write(ev.Type, ev.ID, ev) {
				return
			}
		}
		if !flush() {
			return
		}
		select {
		case <-changed:
		case now := <-stats.C:
			cur := a.totals()
			if !write("stats", 0, statsOf(prev, cur, now.Sub(prevAt), now)) {
				return
			}
			prev, prevAt = cur, now
		case <-ping.C:
			_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-a.ctx.Done():
			return
		}
	}
}

func (a *API) totals() Totals {
	if a.cfg.Totals != nil {
		return a.cfg.Totals()
	}
	st := a.cfg.Rooms.Stats()
	return Totals{Rooms: st.Rooms, Participants: st.Participants, PublishedTracks: st.PublishedTracks, SubscribedTracks: st.SubscribedTracks}
}

func statsOf(prev, cur Totals, elapsed time.Duration, now time.Time) statsEvent {
	e := statsEvent{Time: now.UnixMilli(), Rooms: cur.Rooms, Participants: cur.Participants, PublishedTracks: cur.PublishedTracks,
		SubscribedTracks: cur.SubscribedTracks, PacketsIn: cur.PacketsIn, PacketsOut: cur.PacketsOut}
	if sec := elapsed.Seconds(); sec > 0 {
		if cur.BytesIn >= prev.BytesIn {
			e.BitrateIn = uint64(float64(cur.BytesIn-prev.BytesIn) * 8 / sec)
		}
		if cur.BytesOut >= prev.BytesOut {
			e.BitrateOut = uint64(float64(cur.BytesOut-prev.BytesOut) * 8 / sec)
		}
	}
	return e
}
