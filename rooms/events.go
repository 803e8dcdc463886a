package rooms

import "github.com/pion/webrtc/v4"

// Sink receives a participant's events in the order the client must see
// them. Send must not block (the signaling connection queues them).
type Sink interface {
	Send(ev any)
}

// Events sent to a Sink.
type (
	// Joined is always the first event of a session.
	Joined struct {
		Self   ParticipantInfo
		Others []ParticipantInfo
		Grants Grants
	}
	ParticipantJoined struct{ Participant ParticipantInfo }
	ParticipantLeft   struct{ SID, Identity, Reason string }
	TrackPublished    struct {
		ParticipantSID string
		Track          TrackInfo
	}
	TrackUnpublished struct{ ParticipantSID, TrackSID string }
	TrackMuted       struct {
		ParticipantSID, TrackSID string
		Muted                    bool
	}
	// Answer is the publisher connection's answer.
	Answer struct{ SDP string }
	// Offer is a subscriber connection offer.
	Offer struct {
		SDP  string
		Mids map[string]string
	}
	// Candidate is a local ICE candidate for Target (nil ends gathering).
	Candidate struct {
		Target    string
		Candidate *webrtc.ICECandidateInit
	}
	// Closed ends the session from the server side.
	Closed struct {
		Reason string // server_shutdown, duplicate_identity, removed, room_closed, ...
		Err    error
	}
	// SetLayers tells a publisher which simulcast layers of one of its
	// tracks some subscriber wants (dynacast).
	SetLayers struct {
		TrackSID string
		Active   []string
	}
	// Speakers lists who speaks now, loudest first.
	Speakers struct{ Speakers []Speaker }
	// ParticipantUpdated tells a participant that an administrator changed
	// its name, metadata or grants.
	ParticipantUpdated struct {
		Participant ParticipantInfo
		Grants      Grants
	}
)

// Targets of candidates.
const (
	TargetPublisher  = "publisher"
	TargetSubscriber = "subscriber"
)
