package turn

import "errors"

// Sentinel errors of the turn package.
var (
	ErrBadConfig = errors.New("turn: bad config")
)
