package rooms

import "github.com/pion/webrtc/v4"

func webrtcCandidate() webrtc.ICECandidateInit {
	return webrtc.ICECandidateInit{Candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host"}
}
