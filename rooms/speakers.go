package rooms

import (
	"math"
	"slices"
	"time"

	"github.com/pion/webrtc/v4"
)

// Speaker is one entry of the speakers list.
type Speaker struct {
	SID      string  `json:"sid"`
	Identity string  `json:"identity"`
	Level    float64 `json:"level"` // 0-1
}

const (
	// speakerTick is how often the speakers are recomputed: the list
	// changes at most this often.
	speakerTick = 200 * time.Millisecond
	// speakingLevel is the smoothed linear level (about -40 dBov) above
	// which a participant speaks.
	speakingLevel = 0.01
	// speakerDecay is how much of the previous level is kept per tick, so
	// that a short pause between words does not end the speaking.
	speakerDecay = 0.6
)

// speakerLoop detects active speakers from the audio level header extension
// of microphone tracks, and tells the room when the list changes.
func (r *Room) speakerLoop() {
	t := time.NewTicker(speakerTick)
	defer t.Stop()
	levels := map[*Participant]float64{}
	var last []Speaker
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			last = r.updateSpeakers(levels, last)
		}
	}
}

func (r *Room) updateSpeakers(levels map[*Participant]float64, last []Speaker) []Speaker {
	r.mu.Lock()
	parts := make([]*Participant, 0, len(r.parts))
	for _, p := range r.parts {
		parts = append(parts, p)
	}
	r.mu.Unlock()
	var now []Speaker
	seen := make(map[*Participant]bool, len(parts))
	for _, p := range parts {
		seen[p] = true
		level := levels[p] * speakerDecay
		for _, pt := range p.publishedTracks() {
			if pt.t.Kind() != webrtc.RTPCodecTypeAudio || pt.info.Source != SourceMicrophone {
				continue
			}
			if l, ok := pt.t.AudioLevel(); ok && !pt.t.Muted() {
				level = max(level, l)
			}
		}
		levels[p] = level
		if level >= speakingLevel {
			now = append(now, Speaker{SID: p.sid, Identity: p.identity, Level: wireLevel(level)})
		}
	}
	for p := range levels {
		if !seen[p] {
			delete(levels, p)
		}
	}
	slices.SortStableFunc(now, func(a, b Speaker) int {
		switch {
		case a.Level > b.Level:
			return -1
		case a.Level < b.Level:
			return 1
		}
		return 0
	})
	if sameSpeakers(now, last) {
		return last
	}
	list := append([]Speaker{}, now...)
	r.mu.Lock()
	for _, x := range r.parts {
		x.sink.Send(Speakers{Speakers: list})
	}
	r.mu.Unlock()
	r.speakingChanged(now, last)
	return now
}

// sameSpeakers compares who speaks and in which order, not the levels.
func sameSpeakers(a, b []Speaker) bool {
	return slices.EqualFunc(a, b, func(x, y Speaker) bool { return x.SID == y.SID })
}

// speakingChanged updates the presence entries' speaking flags.
func (r *Room) speakingChanged(now, last []Speaker) {
	speaking := make(map[string]bool, len(now))
	for _, s := range now {
		speaking[s.Identity] = true
	}
	was := make(map[string]bool, len(last))
	for _, s := range last {
		was[s.Identity] = true
	}
	t := time.Now()
	r.dmu.Lock()
	defer r.dmu.Unlock()
	for id, e := range r.presence {
		if speaking[id] != was[id] && e.part != nil && e.Speaking != speaking[id] {
			e.Speaking = speaking[id]
			r.presenceChangedLocked(e, t)
		}
	}
}

// wireLevel maps a linear level to 0-1 on a 60 dB scale: -60 dBov or
// quieter is 0, full scale is 1.
func wireLevel(amp float64) float64 {
	if amp <= 0 {
		return 0
	}
	v := 1 + 20*math.Log10(amp)/60
	return math.Round(min(max(v, 0), 1)*100) / 100
}
