package sfu

import "testing"

func TestIsKeyframe(t *testing.T) {
	cases := []struct {
		name, mime string
		payload    []byte
		want       bool
	}{
		{"vp8 key", "video/VP8", []byte{0x10, 0x00, 0x9d}, true},
		{"vp8 delta", "video/VP8", []byte{0x10, 0x01}, false},
		{"vp8 not start", "video/VP8", []byte{0x00, 0x00}, false},
		{"vp8 ext picture id 15 bit", "video/vp8", []byte{0x90, 0x80, 0x81, 0x23, 0x00}, true},
		{"vp8 ext picture id 7 bit delta", "video/VP8", []byte{0x90, 0x80, 0x11, 0x01}, false},
		{"vp8 truncated", "video/VP8", []byte{0x90}, false},
		{"vp8 empty", "video/VP8", nil, false},
		{"vp9 key no layers", "video/VP9", []byte{0x08}, true},
		{"vp9 inter", "video/VP9", []byte{0x48}, false},
		{"vp9 key layer 0", "video/VP9", []byte{0xa8, 0x01, 0x00}, true},
		{"vp9 key layer 1", "video/VP9", []byte{0xa8, 0x01, 0x02}, false},
		{"h264 idr", "video/H264", []byte{0x65}, true},
		{"h264 sps", "video/H264", []byte{0x67}, true},
		{"h264 slice", "video/H264", []byte{0x41}, false},
		{"h264 stap-a with sps", "video/H264", []byte{0x78, 0x00, 0x02, 0x67, 0x42}, true},
		{"h264 stap-a truncated", "video/H264", []byte{0x78, 0x00}, false},
		{"h264 fu-a idr start", "video/H264", []byte{0x7c, 0x85}, true},
		{"h264 fu-a idr middle", "video/H264", []byte{0x7c, 0x05}, false},
		{"av1 new sequence", "video/AV1", []byte{0x08}, true},
		{"opus", "audio/opus", []byte{0xff}, false},
	}
	for _, c := range cases {
		if got := isKeyframe(c.mime, c.payload); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func FuzzIsKeyframe(f *testing.F) {
	f.Add("video/VP8", []byte{0x90, 0x80, 0x81, 0x23, 0x00})
	f.Add("video/VP9", []byte{0xa8, 0x01, 0x00})
	f.Add("video/H264", []byte{0x78, 0x00, 0x02, 0x67, 0x42})
	f.Add("video/AV1", []byte{0x08})
	f.Fuzz(func(t *testing.T, mime string, payload []byte) {
		_ = isKeyframe(mime, payload)
	})
}

func TestFmtpCompatible(t *testing.T) {
	src := "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
	if !fmtpCompatible("profile-level-id=42e01f;packetization-mode=1", src, "video/H264") {
		t.Error("same profile and mode should match")
	}
	if fmtpCompatible("profile-level-id=42e01f;packetization-mode=0", src, "video/H264") {
		t.Error("different packetization mode must not match")
	}
	if fmtpCompatible("profile-level-id=640032;packetization-mode=1", src, "video/H264") {
		t.Error("different profile must not match")
	}
	if !fmtpCompatible("", "", "video/VP8") {
		t.Error("VP8 matches on mime alone")
	}
}
