package sfu

import (
	"fmt"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
)

// Labels of the two data channels the server opens on every subscriber
// connection (docs/protocol.md, "Data channels").
const (
	LabelReliable = "parley"       // reliable, ordered
	LabelLossy    = "parley-lossy" // unordered, no retransmissions
)

// MaxDataMessage is the largest data channel message the server accepts
// (announced as a=max-message-size); larger ones close the channel.
const MaxDataMessage = 64 << 10

// Buffer limits of one participant's data channels. Above highWater the
// reliable sender waits for the client to catch up; the lossy channel
// drops instead.
const (
	dataHighWater  = 1 << 20
	dataLowWater   = 256 << 10
	lossyHighWater = 128 << 10
)

// Data is the server's end of one participant's two data channels. Send
// and SendLossy may be called from one goroutine each.
type Data struct {
	reliable, lossy *webrtc.DataChannel
	low             chan struct{} // the reliable buffer fell below dataLowWater
	closed          chan struct{}
	closeOnce       sync.Once
}

func newData(pc *webrtc.PeerConnection, ev PeerEvents) (*Data, error) {
	rel, err := pc.CreateDataChannel(LabelReliable, nil)
	if err != nil {
		return nil, fmt.Errorf("sfu: data channel %s: %w", LabelReliable, err)
	}
	unordered, noRetransmits := false, uint16(0)
	lossy, err := pc.CreateDataChannel(LabelLossy, &webrtc.DataChannelInit{Ordered: &unordered, MaxRetransmits: &noRetransmits})
	if err != nil {
		return nil, fmt.Errorf("sfu: data channel %s: %w", LabelLossy, err)
	}
	d := &Data{reliable: rel, lossy: lossy, low: make(chan struct{}, 1), closed: make(chan struct{})}
	rel.SetBufferedAmountLowThreshold(dataLowWater)
	rel.OnBufferedAmountLow(func() {
		select {
		case d.low <- struct{}{}:
		default:
		}
	})
	rel.OnOpen(func() {
		if ev.DataOpen != nil {
			ev.DataOpen(d)
		}
	})
	rel.OnClose(d.markClosed)
	if ev.DataMessage != nil {
		rel.OnMessage(func(m webrtc.DataChannelMessage) { ev.DataMessage(false, m.Data) })
		lossy.OnMessage(func(m webrtc.DataChannelMessage) { ev.DataMessage(true, m.Data) })
	}
	return d, nil
}

func (d *Data) markClosed() { d.closeOnce.Do(func() { close(d.closed) }) }

// Send sends one text message on the reliable channel. While the client has
// more than dataHighWater bytes unacknowledged it waits, at most stall; a
// client that does not read gets ErrDataStalled.
func (d *Data) Send(msg string, stall time.Duration) error {
	if d.reliable.BufferedAmount() > dataHighWater {
		deadline := time.NewTimer(stall)
		defer deadline.Stop()
		for d.reliable.BufferedAmount() > dataHighWater {
			select {
			case <-d.low:
			case <-d.closed:
				return ErrClosed
			case <-deadline.C:
				return ErrDataStalled
			}
		}
	}
	if err := d.reliable.SendText(msg); err != nil {
		return fmt.Errorf("%w: %v", ErrClosed, err)
	}
	return nil
}

// SendLossy sends one message on the lossy channel, or drops it
// (ErrDataBusy) when the channel is not open or its buffer is full.
func (d *Data) SendLossy(msg string) error {
	if d.lossy.ReadyState() != webrtc.DataChannelStateOpen || d.lossy.BufferedAmount() > lossyHighWater {
		return ErrDataBusy
	}
	if err := d.lossy.SendText(msg); err != nil {
		return ErrDataBusy
	}
	return nil
}

// Closed is closed when the reliable channel has closed.
func (d *Data) Closed() <-chan struct{} { return d.closed }
