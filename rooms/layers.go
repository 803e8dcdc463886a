package rooms

import (
	"fmt"

	"github.com/parley-rtc/parley/sfu"
)

var qualities = [3]string{"low", "medium", "high"}

// checkLayers validates the simulcast description of one track.
func checkLayers(d TrackDesc) error {
	if len(d.Layers) > 3 {
		return fmt.Errorf("%w: track %q has %d layers, at most 3", ErrBadDescription, d.TrackID, len(d.Layers))
	}
	seen := map[string]bool{}
	for _, l := range d.Layers {
		if l.RID == "" || len(l.RID) > 16 || seen[l.RID] {
			return fmt.Errorf("%w: track %q: every layer needs its own rid (1-16 characters)", ErrBadDescription, d.TrackID)
		}
		if l.Width < 0 || l.Height < 0 || l.Width > 16384 || l.Height > 16384 {
			return fmt.Errorf("%w: track %q: layer %q has a bad size", ErrBadDescription, d.TrackID, l.RID)
		}
		seen[l.RID] = true
	}
	return nil
}

// layerInfos describes a simulcast track's layers for the wire: from the
// publisher's description when it gave one, else from the RIDs seen so far.
func layerInfos(desc []sfu.LayerDesc, rids []string) []LayerInfo {
	var out []LayerInfo
	if len(desc) > 0 {
		off := 3 - len(desc)
		for i, d := range desc {
			out = append(out, LayerInfo{RID: d.RID, Quality: qualities[off+i], Width: d.Width, Height: d.Height})
		}
		return out
	}
	off := 3 - len(rids)
	for i, r := range rids {
		out = append(out, LayerInfo{RID: r, Quality: qualities[max(off, 0)+i]})
	}
	return out
}
