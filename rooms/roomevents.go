package rooms

import "time"

// Room event types, for operators (the admin API's event stream and
// webhooks; docs/api.md, "Events").
const (
	EventRoomStarted      = "room_started"
	EventRoomFinished     = "room_finished"
	EventParticipantJoin  = "participant_joined"
	EventParticipantLeft  = "participant_left"
	EventTrackPublished   = "track_published"
	EventTrackUnpublished = "track_unpublished"
	EventTrackMuted       = "track_muted"
)

// Event is something that happened in a room. Events of one room are
// emitted in the order they happened.
type Event struct {
	Type        string
	Time        time.Time
	Room        string
	Participant *EventParticipant // participant and track events
	Track       *TrackInfo        // track events
	Reason      string            // participant_left
}

// EventParticipant names the participant of an event.
type EventParticipant struct {
	SID      string `json:"sid"`
	Identity string `json:"identity"`
	Name     string `json:"name"`
}

// emit hands ev to Config.Events, if any. It is called with room locks
// held, so that a room's events keep their order; the receiver must not
// block or call back into rooms.
func (m *Manager) emit(ev Event) {
	if m.cfg.Events == nil {
		return
	}
	ev.Time = time.Now()
	m.cfg.Events(ev)
}

func (p *Participant) eventInfo() *EventParticipant {
	return &EventParticipant{SID: p.sid, Identity: p.identity, Name: p.Name()}
}
