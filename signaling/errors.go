package signaling

import "errors"

// Sentinel errors of the signaling package.
var (
	ErrInvalidToken = errors.New("signaling: invalid token")
	ErrTokenExpired = errors.New("signaling: token expired or not yet valid")
	ErrBadConfig    = errors.New("signaling: bad config")
)

// Stable error codes on the wire (docs/protocol.md).
const (
	CodeBadRequest          = "bad_request"
	CodeUnknownType         = "unknown_type"
	CodeUnsupportedProtocol = "unsupported_protocol"
	CodeNotJoined           = "not_joined"
	CodeInvalidToken        = "invalid_token"
	CodeTokenExpired        = "token_expired"
	CodeRoomMismatch        = "room_mismatch"
	CodeRoomFull            = "room_full"
	CodeTooManyRooms        = "too_many_rooms"
	CodeTooManyTracks       = "too_many_tracks"
	CodePermissionDenied    = "permission_denied"
	CodeBadSDP              = "bad_sdp"
	CodeNegotiationTimeout  = "negotiation_timeout"
	CodeShuttingDown        = "shutting_down"
	CodeSlowClient          = "slow_client"
	CodeDraining            = "draining"
	CodeRateLimited         = "rate_limited"
	CodeResumeFailed        = "resume_failed"
	CodeInternal            = "internal"
	// Several nodes (docs/scaling.md).
	CodeClusterUnavailable = "cluster_unavailable" // Redis does not answer: retry in a few seconds
	CodeNoNode             = "no_node_available"   // every node is full or draining
	CodeNodeUnavailable    = "node_unavailable"    // the room's node does not answer yet: retry in a few seconds
	CodeRoomMoved          = "room_moved"          // the room's node stopped or drains: join again
)
