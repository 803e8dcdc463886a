package sfu

import "errors"

// Sentinel errors returned by the sfu package.
var (
	ErrBadSDP             = errors.New("sfu: SDP could not be applied")
	ErrClosed             = errors.New("sfu: peer connection is closed")
	ErrNotNegotiated      = errors.New("sfu: no offer is waiting for an answer")
	ErrBadCandidate       = errors.New("sfu: ICE candidate could not be added")
	ErrBadConfig          = errors.New("sfu: bad config")
	ErrNegotiationTimeout = errors.New("sfu: the client did not answer the offer in time")
	ErrDataStalled        = errors.New("sfu: the client does not read its data channel")
	ErrDataBusy           = errors.New("sfu: lossy data channel busy; message dropped")
	ErrUnknownTrack       = errors.New("sfu: not subscribed to that track")
)
