package signaling

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/rooms"
)

// publishLevel publishes a microphone whose packets carry the audio level
// in *level (-dBov: 0 loudest, 127 silence).
func (c *testClient) publishLevel(level *atomic.Uint32) {
	c.t.Helper()
	a, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, c.identity+"-mic", c.identity)
	if err != nil {
		c.t.Fatal(err)
	}
	tr, err := c.pub.AddTransceiverFromTrack(a, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		c.t.Fatal(err)
	}
	go func() {
		for {
			if _, _, err := tr.Sender().ReadRTCP(); err != nil {
				return
			}
		}
	}()
	offer, err := c.pub.CreateOffer(nil)
	if err == nil {
		err = c.pub.SetLocalDescription(offer)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(TypeOffer, Offer{SDP: offer.SDP, Tracks: []TrackDesc{{TrackID: a.ID(), Source: "microphone"}}})
	c.sendWG.Add(1)
	go func() {
		defer c.sendWG.Done()
		var id int
		for _, x := range tr.Sender().GetParameters().HeaderExtensions {
			if x.URI == sdp.AudioLevelURI {
				id = x.ID
			}
		}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		seq, ts := uint16(1), uint32(1)
		for {
			select {
			case <-c.stopSend:
				return
			case <-tick.C:
			}
			seq++
			ts += 960
			p := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts}, Payload: makePayload(webrtc.RTPCodecTypeAudio, c.identity, uint32(seq), 60)}
			if id != 0 {
				_ = p.Header.SetExtension(uint8(id), []byte{0x80 | byte(level.Load())})
			}
			if err := a.WriteRTP(p); err != nil {
				return
			}
		}
	}()
}

// speakers is the last speakers list c received, and how many it got.
func (c *testClient) speakers() ([]rooms.Speaker, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last []rooms.Speaker
	n := 0
	for _, e := range c.events {
		if e.Type == TypeSpeakers {
			var s Speakers
			_ = json.Unmarshal(e.Data, &s)
			last = s.Speakers
			n++
		}
	}
	return last, n
}

func identities(s []rooms.Speaker) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = x.Identity
	}
	return out
}

// TestActiveSpeaker: a participant whose audio level goes up becomes the
// first speaker reported to the others within a second; louder ranks
// first; silence empties the list. Levels come from the RFC 6464 header
// extension of real pion peers.
func TestActiveSpeaker(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{})
	var aliceLevel, bobLevel atomic.Uint32
	aliceLevel.Store(127)
	bobLevel.Store(127)
	alice := joinClient(t, s, "talk", "alice")
	bob := joinClient(t, s, "talk", "bob")
	carol := joinClient(t, s, "talk", "carol")
	alice.publishLevel(&aliceLevel)
	bob.publishLevel(&bobLevel)
	waitErr(t, 10*time.Second, func() error {
		return carol.mediaFrom([]string{"alice", "bob"}, []string{"audio"}, 20)
	})
	if sp, _ := carol.speakers(); len(sp) != 0 {
		t.Fatalf("speakers %v while everybody is silent", identities(sp))
	}

	start := time.Now()
	aliceLevel.Store(10) // -10 dBov: loud
	waitFor(t, time.Second, "alice reported as the first speaker within 1 s", func() bool {
		sp, _ := carol.speakers()
		return len(sp) > 0 && sp[0].Identity == "alice"
	})
	t.Logf("alice reported after %s", time.Since(start).Round(time.Millisecond))
	sp, _ := carol.speakers()
	if sp[0].SID != alice.sid() || sp[0].Level <= 0 || sp[0].Level > 1 {
		t.Fatalf("alice's entry %+v: want her sid and a level in (0, 1]", sp[0])
	}
	waitFor(t, time.Second, "bob, another participant, hears the same", func() bool {
		sp, _ := bob.speakers()
		return len(sp) == 1 && sp[0].Identity == "alice"
	})

	bobLevel.Store(35) // quieter than alice
	waitFor(t, 2*time.Second, "both speak, alice first", func() bool {
		sp, _ := carol.speakers()
		return len(sp) == 2 && sp[0].Identity == "alice" && sp[1].Identity == "bob"
	})
	aliceLevel.Store(127)
	waitFor(t, 2*time.Second, "alice stops, bob alone", func() bool {
		sp, _ := carol.speakers()
		return len(sp) == 1 && sp[0].Identity == "bob"
	})
	bobLevel.Store(127)
	waitFor(t, 2*time.Second, "silence empties the list", func() bool {
		sp, n := carol.speakers()
		return len(sp) == 0 && n > 0
	})
	// The list changes at most five times a second.
	_, n := carol.speakers()
	if elapsed := time.Since(start); float64(n) > elapsed.Seconds()*5+1 {
		t.Fatalf("%d speakers messages in %s", n, elapsed)
	}
	// A muted microphone does not speak.
	aliceLevel.Store(5)
	waitFor(t, 2*time.Second, "alice speaks again", func() bool {
		sp, _ := carol.speakers()
		return len(sp) == 1 && sp[0].Identity == "alice"
	})
	var mic string
	for _, tr := range alice.ownTracks() {
		if tr.Kind == "audio" {
			mic = tr.SID
		}
	}
	alice.write(TypeMute, Mute{TrackSID: mic, Muted: true})
	waitFor(t, 2*time.Second, "muted alice leaves the list", func() bool {
		sp, _ := carol.speakers()
		return len(sp) == 0
	})
}

// ownTracks lists the tracks c published, from the track_published
// messages it got about itself.
func (c *testClient) ownTracks() []rooms.TrackInfo {
	sid := c.sid()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []rooms.TrackInfo
	for _, e := range c.events {
		if e.Type == TypeTrackPub {
			var tp TrackPublished
			_ = json.Unmarshal(e.Data, &tp)
			if tp.ParticipantSID == sid {
				out = append(out, tp.Track)
			}
		}
	}
	return out
}

func (c *testClient) packetsOf(sid string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.recv[sid]; r != nil {
		return r.packets
	}
	return 0
}

func (c *testClient) lastError() Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errors) == 0 {
		return Error{}
	}
	return c.errors[len(c.errors)-1]
}

// TestTrackSettingsPause: a subscriber that pauses a track (hidden tile)
// stops receiving it while another keeps it; resuming continues the
// sequence numbers; bad settings are refused and the session stays.
func TestTrackSettingsPause(t *testing.T) {
	s := newTestServer(t, rooms.Config{}, Config{})
	alice := joinClient(t, s, "tiles", "alice")
	bob := joinClient(t, s, "tiles", "bob")
	carol := joinClient(t, s, "tiles", "carol")
	alice.publish(true, true)
	waitErr(t, 10*time.Second, func() error { return bob.mediaFrom([]string{"alice"}, []string{"audio", "video"}, 20) })
	waitErr(t, 10*time.Second, func() error { return carol.mediaFrom([]string{"alice"}, []string{"audio", "video"}, 20) })
	var video, audio string
	for _, tr := range alice.ownTracks() {
		if tr.Kind == "video" {
			video = tr.SID
		} else {
			audio = tr.SID
		}
	}
	bob.write(TypeTrackSettings, TrackSettings{TrackSID: video, Paused: true})
	time.Sleep(300 * time.Millisecond) // what was queued drains
	before, carolBefore, audioBefore := bob.packetsOf(video), carol.packetsOf(video), bob.packetsOf(audio)
	time.Sleep(time.Second)
	if got := bob.packetsOf(video) - before; got > 2 {
		t.Fatalf("paused video: bob got %d packets in 1 s", got)
	}
	if carol.packetsOf(video)-carolBefore < 50 || bob.packetsOf(audio)-audioBefore < 25 {
		t.Fatal("pausing one subscriber's video stopped other media")
	}
	bob.write(TypeTrackSettings, TrackSettings{TrackSID: video, Width: 320, Height: 180})
	waitFor(t, 3*time.Second, "video resumes", func() bool { return bob.packetsOf(video)-before > 50 })
	// The muted gap left no hole in the sequence numbers.
	snap := bob.snapshot()
	if r := snap[video]; r.gaps > 1 {
		t.Fatalf("%d sequence discontinuities after pause and resume", r.gaps)
	}

	for _, bad := range []TrackSettings{{TrackSID: "TR_nope"}, {TrackSID: video, Quality: "ultra"}, {TrackSID: video, Width: -1}} {
		bob.write(TypeTrackSettings, bad)
		waitFor(t, 2*time.Second, "refusal", func() bool {
			e := bob.lastError()
			return e.Request == TypeTrackSettings && e.Code == CodeBadRequest
		})
		bob.mu.Lock()
		bob.errors = nil
		bob.mu.Unlock()
	}
	n := bob.packetsOf(video)
	waitFor(t, 2*time.Second, "the session goes on", func() bool { return bob.packetsOf(video) > n+20 })
}
