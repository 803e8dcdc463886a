package rooms

import "errors"

// Sentinel errors; signaling maps each to a stable wire code.
var (
	ErrRoomFull       = errors.New("rooms: the room is full")
	ErrTooManyRooms   = errors.New("rooms: the server has reached its room limit")
	ErrTooManyTracks  = errors.New("rooms: too many tracks for one participant")
	ErrPermission     = errors.New("rooms: the token does not grant this")
	ErrClosed         = errors.New("rooms: the server is shutting down")
	ErrUnknownTrack   = errors.New("rooms: no such track of this participant")
	ErrBadTarget      = errors.New("rooms: target must be publisher or subscriber")
	ErrBadConfig      = errors.New("rooms: bad config")
	ErrBadDescription = errors.New("rooms: bad session description")
	ErrDraining       = errors.New("rooms: the server is draining and takes no new participants")
	ErrNoRoom         = errors.New("rooms: no such room")
	ErrNoParticipant  = errors.New("rooms: no such participant in the room")
	ErrRoomExists     = errors.New("rooms: the room exists already")
)
