package rooms

// Grants are the permissions a participant's token gives it.
type Grants struct {
	Publish   bool `json:"publish"`
	Subscribe bool `json:"subscribe"`
	Data      bool `json:"data"`
	Admin     bool `json:"admin"`
}

// Track sources.
const (
	SourceCamera      = "camera"
	SourceMicrophone  = "microphone"
	SourceScreen      = "screen"
	SourceScreenAudio = "screen_audio"
)

// TrackInfo describes a published track.
type TrackInfo struct {
	SID string `json:"sid"`
	// CID is the publisher's own MediaStreamTrack id for this track.
	CID    string `json:"cid"`
	Kind   string `json:"kind"` // audio or video
	Source string `json:"source"`
	Muted  bool   `json:"muted"`
	Codec  string `json:"codec"` // e.g. video/VP8
	// Layers are the simulcast encodings, lowest quality first.
	Layers []LayerInfo `json:"layers,omitempty"`
}

// LayerInfo describes one simulcast encoding of a track.
type LayerInfo struct {
	RID     string `json:"rid"`
	Quality string `json:"quality"` // low, medium, high
	Width   int    `json:"width,omitempty"`
	Height  int    `json:"height,omitempty"`
}

// ParticipantInfo describes a participant in a room.
type ParticipantInfo struct {
	SID      string      `json:"sid"`
	Identity string      `json:"identity"`
	Name     string      `json:"name"`
	JoinedAt int64       `json:"joined_at"` // unix milliseconds
	Tracks   []TrackInfo `json:"tracks"`
}
