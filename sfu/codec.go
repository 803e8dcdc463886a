package sfu

import "strings"

// isKeyframe reports whether an RTP payload starts a video keyframe for the
// given codec mime type. It reads only the payload descriptors, never decodes.
func isKeyframe(mime string, payload []byte) bool {
	switch {
	case strings.EqualFold(mime, "video/VP8"):
		return vp8Keyframe(payload)
	case strings.EqualFold(mime, "video/VP9"):
		return vp9Keyframe(payload)
	case strings.EqualFold(mime, "video/H264"):
		return h264Keyframe(payload)
	case strings.EqualFold(mime, "video/AV1"):
		return av1Keyframe(payload)
	}
	return false
}

// vp8Keyframe: RFC 7741 payload descriptor, then the VP8 frame header whose
// first bit (P) is 0 for key frames; only the first partition start counts.
func vp8Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	x := p[0]&0x80 != 0
	s := p[0]&0x10 != 0
	pid := p[0] & 0x07
	if !s || pid != 0 {
		return false
	}
	i := 1
	if x {
		if len(p) <= i {
			return false
		}
		ext := p[i]
		i++
		if ext&0x80 != 0 { // I: picture id
			if len(p) <= i {
				return false
			}
			if p[i]&0x80 != 0 {
				i += 2
			} else {
				i++
			}
		}
		if ext&0x40 != 0 { // L: tl0picidx
			i++
		}
		if ext&0x20 != 0 || ext&0x10 != 0 { // T or K
			i++
		}
	}
	if len(p) <= i {
		return false
	}
	return p[i]&0x01 == 0
}

// vp9Keyframe: RFC 9628 descriptor. A packet that begins a frame (B) which is
// not inter-predicted (P=0) on spatial layer 0 starts a keyframe.
func vp9Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	interPicture := p[0]&0x40 != 0
	layerIdx := p[0]&0x20 != 0
	begin := p[0]&0x08 != 0
	if interPicture || !begin {
		return false
	}
	if !layerIdx {
		return true
	}
	i := 1
	if p[0]&0x80 != 0 { // picture id
		if len(p) <= i {
			return false
		}
		if p[i]&0x80 != 0 {
			i += 2
		} else {
			i++
		}
	}
	if len(p) <= i {
		return false
	}
	return (p[i]>>1)&0x07 == 0 // spatial id 0
}

// h264Keyframe: an IDR slice or SPS at the start of the payload, alone, in a
// STAP-A, or as the first fragment of an FU-A.
func h264Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	switch nal := p[0] & 0x1f; nal {
	case 5, 7:
		return true
	case 24: // STAP-A
		for i := 1; i+2 < len(p); {
			size := int(p[i])<<8 | int(p[i+1])
			i += 2
			if i >= len(p) {
				return false
			}
			if t := p[i] & 0x1f; t == 5 || t == 7 {
				return true
			}
			i += size
		}
	case 28: // FU-A
		if len(p) < 2 {
			return false
		}
		return p[1]&0x80 != 0 && p[1]&0x1f == 5
	}
	return false
}

// av1Keyframe: the aggregation header's N bit marks the first packet of a
// coded video sequence, which starts with a keyframe.
func av1Keyframe(p []byte) bool {
	return len(p) > 0 && p[0]&0x08 != 0
}

// rtpHeaderLen is the length of the RTP header of pkt (fixed part, CSRCs
// and extension), or -1 when pkt is too short for it.
func rtpHeaderLen(pkt []byte) int {
	if len(pkt) < 12 {
		return -1
	}
	n := 12 + 4*int(pkt[0]&0x0f)
	if pkt[0]&0x10 != 0 {
		if len(pkt) < n+4 {
			return -1
		}
		n += 4 + 4*(int(pkt[n+2])<<8|int(pkt[n+3]))
	}
	if n > len(pkt) {
		return -1
	}
	return n
}

// audioLevel finds the RFC 6464 audio level (one-byte or two-byte header
// extension id) in an RTP packet: 0 is the loudest, 127 silence (-dBov).
func audioLevel(pkt []byte, id uint8) (uint8, bool) {
	if v := headerExt(pkt, id); len(v) >= 1 {
		return v[0] & 0x7f, true
	}
	return 0, false
}

// headerExt is the value of header extension id (RFC 8285, one-byte or
// two-byte form) in an RTP packet, or nil. It points into pkt.
func headerExt(pkt []byte, id uint8) []byte {
	if id == 0 || len(pkt) < 16 || pkt[0]&0x10 == 0 {
		return nil
	}
	i := 12 + 4*int(pkt[0]&0x0f)
	if len(pkt) < i+4 {
		return nil
	}
	profile := int(pkt[i])<<8 | int(pkt[i+1])
	end := i + 4 + 4*(int(pkt[i+2])<<8|int(pkt[i+3]))
	if end > len(pkt) {
		return nil
	}
	i += 4
	for i < end {
		var eid, elen int
		switch {
		case profile == 0xBEDE:
			if pkt[i] == 0 { // padding
				i++
				continue
			}
			eid, elen = int(pkt[i]>>4), int(pkt[i]&0x0f)+1
			if eid == 15 {
				return nil
			}
			i++
		case profile&0xfff0 == 0x1000:
			if pkt[i] == 0 {
				i++
				continue
			}
			if i+1 >= end {
				return nil
			}
			eid, elen = int(pkt[i]), int(pkt[i+1])
			i += 2
		default:
			return nil
		}
		if i+elen > end {
			return nil
		}
		if eid == int(id) && elen >= 1 {
			return pkt[i : i+elen]
		}
		i += elen
	}
	return nil
}

// vp8KeyframeSize reads the frame size from the first packet of a VP8
// keyframe (RFC 6386 9.1: start code 9d 01 2a, then 14-bit width and
// height).
func vp8KeyframeSize(p []byte) (w, h int, ok bool) {
	if !vp8Keyframe(p) {
		return 0, 0, false
	}
	i := 1
	if p[0]&0x80 != 0 {
		ext := p[1]
		i = 2
		if ext&0x80 != 0 {
			if p[i]&0x80 != 0 {
				i += 2
			} else {
				i++
			}
		}
		if ext&0x40 != 0 {
			i++
		}
		if ext&0x30 != 0 {
			i++
		}
	}
	if len(p) < i+10 || p[i+3] != 0x9d || p[i+4] != 0x01 || p[i+5] != 0x2a {
		return 0, 0, false
	}
	w = int(p[i+6]) | int(p[i+7]&0x3f)<<8
	h = int(p[i+8]) | int(p[i+9]&0x3f)<<8
	return w, h, w > 0 && h > 0
}

// vp9Desc is the part of a VP9 payload descriptor (RFC 9628) the SFU reads.
type vp9Desc struct {
	inter, begin, end bool // P, B, E
	hasLayer          bool // L
	tid, sid          int
	switchUp          bool // U
	hasSS             bool // V with Y: sizes below
	ssLayers          int
	ssW, ssH          [8]int
}

// parse reads a descriptor; false when it is malformed.
func (d *vp9Desc) parse(p []byte) bool {
	*d = vp9Desc{}
	if len(p) < 1 {
		return false
	}
	b0 := p[0]
	d.inter = b0&0x40 != 0
	d.hasLayer = b0&0x20 != 0
	flexible := b0&0x10 != 0
	d.begin = b0&0x08 != 0
	d.end = b0&0x04 != 0
	i := 1
	if b0&0x80 != 0 { // I: picture id
		if len(p) <= i {
			return false
		}
		if p[i]&0x80 != 0 {
			i += 2
		} else {
			i++
		}
	}
	if d.hasLayer {
		if len(p) <= i {
			return false
		}
		d.tid = int(p[i] >> 5)
		d.switchUp = p[i]&0x10 != 0
		d.sid = int(p[i]>>1) & 0x07
		i++
		if !flexible {
			i++ // TL0PICIDX
		}
	}
	if flexible && d.inter { // P_DIFF list
		for k := 0; k < 3; k++ {
			if len(p) <= i {
				return false
			}
			more := p[i]&0x01 != 0
			i++
			if !more {
				break
			}
		}
	}
	if b0&0x02 != 0 { // V: scalability structure
		if len(p) <= i {
			return false
		}
		ns := int(p[i]>>5) + 1
		y := p[i]&0x10 != 0
		i++
		if y {
			if len(p) < i+4*ns {
				return false
			}
			d.hasSS = true
			d.ssLayers = ns
			for k := 0; k < ns; k++ {
				d.ssW[k] = int(p[i])<<8 | int(p[i+1])
				d.ssH[k] = int(p[i+2])<<8 | int(p[i+3])
				i += 4
			}
		}
	}
	return i <= len(p)
}
