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
