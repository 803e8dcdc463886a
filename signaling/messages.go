package signaling

import (
	"encoding/json"

	"github.com/parley-rtc/parley/rooms"
)

// ProtocolVersion is the version of the wire protocol described in
// docs/protocol.md. A client names the version it speaks in its join message.
const ProtocolVersion = 1

// Message types. Every message on the WebSocket is a JSON object
// {"type": "...", "data": {...}}; data holds the payload struct for that type.
const (
	// client -> server
	TypeJoin          = "join"
	TypeOffer         = "offer"     // also server -> client (subscriber offer)
	TypeAnswer        = "answer"    // also server -> client (publisher answer)
	TypeCandidate     = "candidate" // both directions
	TypeMute          = "mute"      // client asks to (un)mute one of its tracks
	TypeUnpublish     = "unpublish" // client stops publishing a track
	TypeLeave         = "leave"     // both directions
	TypePing          = "ping"      // both directions
	TypePong          = "pong"      // both directions
	TypeJoined        = "joined"    // server -> client
	TypePartJoined    = "participant_joined"
	TypePartLeft      = "participant_left"
	TypeTrackPub      = "track_published"
	TypeTrackUnpub    = "track_unpublished"
	TypeTrackMuted    = "track_muted"
	TypePartUpdated   = "participant_updated"
	TypeResume        = "resume"         // client -> server, instead of join
	TypeResumed       = "resumed"        // server -> client
	TypeICERestart    = "ice_restart"    // client -> server
	TypeTrackSettings = "track_settings" // client -> server
	TypeSetLayers     = "set_layers"     // server -> client
	TypeSpeakers      = "speakers"       // server -> client
	TypeError         = "error"
	TargetPublisher   = "publisher"
	TargetSubscrib    = "subscriber"
)

// Envelope is the outer frame of every message.
type Envelope struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data,omitempty"`
}

// Join is the first message a client sends.
type Join struct {
	Token    string `json:"token"`
	Protocol int    `json:"protocol"`
	// Room, when set, must equal the room in the token.
	Room string `json:"room,omitempty"`
}

// Resume takes over a session whose socket dropped (docs/protocol.md,
// "Resuming a session").
type Resume struct {
	Token    string `json:"token"`
	Protocol int    `json:"protocol"`
}

// ICERestart asks for a subscriber offer with new ICE credentials.
type ICERestart struct {
	Target string `json:"target"`
}

// TrackDesc tells the server what a track in a publisher offer is.
type TrackDesc struct {
	// TrackID is the MediaStreamTrack id, as in the offer's a=msid line.
	TrackID string `json:"track_id"`
	Source  string `json:"source"` // camera, microphone, screen, screen_audio
	Muted   bool   `json:"muted,omitempty"`
	// Layers are the simulcast encodings, lowest quality first.
	Layers []LayerDesc `json:"layers,omitempty"`
}

// LayerDesc describes one simulcast encoding of a published track.
type LayerDesc struct {
	RID        string `json:"rid"`
	Width      int    `json:"width,omitempty"`
	Height     int    `json:"height,omitempty"`
	MaxBitrate uint64 `json:"max_bitrate,omitempty"`
}

// TrackSettings says how the client shows one track it receives.
type TrackSettings struct {
	TrackSID string `json:"track_sid"`
	Width    int    `json:"width,omitempty"`
	Height   int    `json:"height,omitempty"`
	Quality  string `json:"quality,omitempty"`
	Paused   bool   `json:"paused,omitempty"`
}

// SetLayers lists the simulcast layers of one of the client's tracks that
// some subscriber wants (dynacast).
type SetLayers struct {
	TrackSID string   `json:"track_sid"`
	Active   []string `json:"active"`
}

// Speakers lists the participants speaking now, loudest first.
type Speakers struct {
	Speakers []rooms.Speaker `json:"speakers"`
}

// Offer carries an SDP offer. From the client it is for the publisher
// connection and lists the tracks it carries; from the server it is for the
// subscriber connection and maps each m-line mid to the track it carries.
type Offer struct {
	SDP    string            `json:"sdp"`
	Tracks []TrackDesc       `json:"tracks,omitempty"` // client -> server
	Mids   map[string]string `json:"mids,omitempty"`   // server -> client: mid -> track sid
}

// Answer carries an SDP answer: from the server for the publisher
// connection, from the client for the subscriber connection.
type Answer struct {
	SDP string `json:"sdp"`
}

// Candidate is one trickled ICE candidate. A null candidate ends gathering.
type Candidate struct {
	Target    string           `json:"target"` // publisher or subscriber
	Candidate *json.RawMessage `json:"candidate"`
}

// Mute asks the server to mark one of the sender's tracks muted or unmuted.
type Mute struct {
	TrackSID string `json:"track_sid"`
	Muted    bool   `json:"muted"`
}

// Unpublish stops one of the sender's tracks.
type Unpublish struct {
	TrackSID string `json:"track_sid"`
}

// Leave ends a session. From the server it carries the reason.
type Leave struct {
	Reason string `json:"reason,omitempty"`
}

// Ping and Pong carry an opaque timestamp echoed back.
type Ping struct {
	Timestamp int64 `json:"ts"`
}

// ICEServer is one entry of RTCConfiguration.iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Joined answers a successful join.
type Joined struct {
	Protocol     int                     `json:"protocol"`
	Room         string                  `json:"room"`
	Participant  rooms.ParticipantInfo   `json:"participant"`
	Participants []rooms.ParticipantInfo `json:"participants"`
	Grants       rooms.Grants            `json:"grants"`
	ICEServers   []ICEServer             `json:"ice_servers"`
	PingInterval int                     `json:"ping_interval_ms"`
	ResumeToken  string                  `json:"resume_token"`
	ResumeGrace  int64                   `json:"resume_grace_ms"`
}

// ParticipantJoined announces another participant.
type ParticipantJoined struct {
	Participant rooms.ParticipantInfo `json:"participant"`
}

// ParticipantLeft announces a departure.
type ParticipantLeft struct {
	SID      string `json:"sid"`
	Identity string `json:"identity"`
	Reason   string `json:"reason,omitempty"`
}

// TrackPublished announces a new track (also sent to its own publisher).
type TrackPublished struct {
	ParticipantSID string          `json:"participant_sid"`
	Track          rooms.TrackInfo `json:"track"`
}

// TrackUnpublished announces a track that ended.
type TrackUnpublished struct {
	ParticipantSID string `json:"participant_sid"`
	TrackSID       string `json:"track_sid"`
}

// TrackMuted announces a mute state change.
type TrackMuted struct {
	ParticipantSID string `json:"participant_sid"`
	TrackSID       string `json:"track_sid"`
	Muted          bool   `json:"muted"`
}

// ParticipantUpdated tells a participant that an administrator changed its
// name, metadata or grants.
type ParticipantUpdated struct {
	Participant rooms.ParticipantInfo `json:"participant"`
	Grants      rooms.Grants          `json:"grants"`
}

// Error reports a problem. Code is stable; Message is for humans.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Request is the type of the client message this error answers, when
	// it answers one (e.g. "offer").
	Request string `json:"request,omitempty"`
}
