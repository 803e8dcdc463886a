// Package congestion is send-side congestion control for one peer
// connection: an interceptor stamps every outgoing RTP packet with a
// transport-wide sequence number and remembers when it was sent, reads the
// receiver's transport-cc feedback, and keeps a delay- and loss-based
// bandwidth estimate (Google congestion control) from it. Nothing is
// allocated per packet or per feedback.
package congestion

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
)

// ErrBadConfig is returned for a config that cannot work.
var ErrBadConfig = errors.New("congestion: bad config")

// Config configures a Controller.
type Config struct {
	// InitialBitrate is the estimate before feedback arrives (bits/s).
	InitialBitrate int64
	// MinBitrate is the lowest the estimate goes (bits/s).
	MinBitrate int64
	// MaxBitrate is the highest the estimate goes (bits/s).
	MaxBitrate int64
	// Epoch is when the clock of StampAt's times reads zero; the zero
	// value is when New runs. A sender that reads a monotonic clock of
	// its own per packet anyway sets it to that clock's zero and hands
	// its readings to StampAt, instead of Stamp reading the clock again.
	Epoch time.Time
}

// Validate checks the config and names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.MinBitrate <= 0:
		return fmt.Errorf("%w: MinBitrate %d must be positive", ErrBadConfig, c.MinBitrate)
	case c.MaxBitrate < c.MinBitrate:
		return fmt.Errorf("%w: MaxBitrate %d is below MinBitrate %d", ErrBadConfig, c.MaxBitrate, c.MinBitrate)
	case c.InitialBitrate < c.MinBitrate || c.InitialBitrate > c.MaxBitrate:
		return fmt.Errorf("%w: InitialBitrate %d is outside [%d, %d]", ErrBadConfig, c.InitialBitrate, c.MinBitrate, c.MaxBitrate)
	}
	return nil
}

// Controller is the congestion control of one peer connection. It is its
// own interceptor factory: register it in the connection's interceptor
// registry before any interceptor that must see packets after their
// transport-wide sequence number was set (it then sits nearest the
// network), and negotiate the transport-cc header extension and feedback.
type Controller struct {
	interceptor.NoOp

	epoch time.Time
	sent  history

	mu      sync.Mutex // serialises feedback
	est     *estimator
	fb      feedback
	refInit bool
	lastRef int32
	refAcc  int64 // unwrapped reference time, 64 ms units

	target atomic.Int64
	loss   atomic.Uint64 // float64 bits
}

// New makes a Controller.
func New(cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	epoch := cfg.Epoch
	if epoch.IsZero() {
		epoch = time.Now()
	}
	c := &Controller{epoch: epoch, est: newEstimator(cfg.InitialBitrate, cfg.MinBitrate, cfg.MaxBitrate)}
	c.target.Store(cfg.InitialBitrate)
	return c, nil
}

// TargetBitrate is the current estimate in bits/s.
func (c *Controller) TargetBitrate() int64 { return c.target.Load() }

// Loss is the average fraction of packets the receiver reports lost.
func (c *Controller) Loss() float64 { return math.Float64frombits(c.loss.Load()) }

// NewInterceptor returns c: one Controller serves one peer connection.
func (c *Controller) NewInterceptor(string) (interceptor.Interceptor, error) { return c, nil }

func (c *Controller) nowUs() int64 { return time.Since(c.epoch).Microseconds() }

// BindLocalStream stamps the stream's packets when the transport-cc header
// extension was negotiated for it.
func (c *Controller) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	var id uint8
	for _, e := range info.RTPHeaderExtensions {
		if e.URI == sdp.TransportCCURI && e.ID > 0 && e.ID < 256 {
			id = uint8(e.ID)
		}
	}
	if id == 0 {
		return w
	}
	st := &stream{}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		// The header points at st.ext until the packet is marshalled, so
		// one packet of the stream is stamped and written at a time
		// (pion's SRTP writer serialises a stream's writes anyway).
		st.mu.Lock()
		defer st.mu.Unlock()
		c.Stamp(id, h, len(payload), &st.ext)
		return w.Write(h, payload, a)
	})
}

// stream is the stamping state of one outgoing stream.
type stream struct {
	mu  sync.Mutex
	ext [2]byte // the marshalled extension of the packet being written
}

// Stamp sets the transport-wide sequence number extension (id) on h, its
// bytes in ext, and records the packet as sent now. For a sender that
// writes past the interceptor (sfu's direct path); h points at ext until
// the packet is marshalled.
func (c *Controller) Stamp(id uint8, h *rtp.Header, payloadLen int, ext *[2]byte) {
	c.StampAt(id, h, payloadLen, ext, c.nowUs())
}

// StampAt is Stamp for a packet sent at nowUs, microseconds since the
// Controller's epoch (Config.Epoch).
func (c *Controller) StampAt(id uint8, h *rtp.Header, payloadLen int, ext *[2]byte, nowUs int64) {
	seq := c.sent.take(nowUs)
	*ext = [2]byte{byte(seq >> 8), byte(seq)}
	if err := h.SetExtension(id, ext[:]); err != nil {
		return // the receiver will count the missing number as lost
	}
	c.sent.record(seq, h.MarshalSize()+payloadLen, nowUs)
}

// BindRTCPReader takes transport-cc feedback out of what the connection
// reads and hands the rest (receiver reports, NACK, PLI, REMB) on.
func (c *Controller) BindRTCPReader(r interceptor.RTCPReader) interceptor.RTCPReader {
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		for {
			n, attr, err := r.Read(b, a)
			if err != nil || n <= 0 || n > len(b) {
				return n, attr, err
			}
			if n = c.Take(b[:n]); n > 0 {
				return n, attr, nil
			}
		}
	})
}

// Take processes the feedback packets of the compound RTCP packet b and
// moves the others to its front; it returns their length. For a reader
// past the interceptor (sfu's direct path).
func (c *Controller) Take(b []byte) int {
	w, off := 0, 0
	for off+4 <= len(b) {
		l := 4 * (int(b[off+2])<<8 | int(b[off+3]) + 1)
		if off+l > len(b) {
			break
		}
		if isFeedback(b[off:]) {
			c.onFeedback(b[off : off+l])
		} else {
			w += copy(b[w:], b[off:off+l])
		}
		off += l
	}
	w += copy(b[w:], b[off:])
	return w
}

// onFeedback feeds one transport-cc feedback packet to the estimator.
func (c *Controller) onFeedback(b []byte) {
	c.process(b, c.nowUs())
}

func (c *Controller) process(b []byte, nowUs int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fb.parse(b) != nil {
		return
	}
	if !c.refInit {
		c.refInit, c.lastRef = true, c.fb.refTime
	}
	// The reference time is 24 bits of 64 ms: unwrap it.
	c.refAcc += int64(int32(uint32(c.fb.refTime-c.lastRef)<<8) >> 8)
	c.lastRef = c.fb.refTime
	arrive := c.refAcc * refUnitUs
	for {
		seq, received, delta, ok := c.fb.next()
		if !ok {
			break
		}
		if received {
			arrive += int64(delta) * deltaUnitUs
		}
		sentUs, size, known := c.sent.lookup(seq, nowUs)
		if !known {
			continue
		}
		c.est.packet(sentUs, arrive, size, received)
	}
	c.est.update(nowUs)
	c.target.Store(int64(c.est.target))
	c.loss.Store(math.Float64bits(c.est.avgLoss))
}
