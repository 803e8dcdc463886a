package sfu

import (
	"bytes"
	"crypto/rand"
	mrand "math/rand/v2"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// TestGCMSealerMatchesPion: for both AEAD profiles, the sealer's packets
// are byte for byte pion's, over two SSRCs, sequence numbers that wrap,
// packets sent out of order and a resend of an old number; and pion's
// receiving context decrypts them to the original.
func TestGCMSealerMatchesPion(t *testing.T) {
	for _, profile := range []srtp.ProtectionProfile{srtp.ProtectionProfileAeadAes128Gcm, srtp.ProtectionProfileAeadAes256Gcm} {
		keyLen, _ := profile.KeyLen()
		saltLen, _ := profile.SaltLen()
		key, salt := make([]byte, keyLen), make([]byte, saltLen)
		rand.Read(key)
		rand.Read(salt)
		g, err := newGCMSealer(key, salt)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := srtp.CreateContext(key, salt, profile)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := srtp.CreateContext(key, salt, profile)
		if err != nil {
			t.Fatal(err)
		}
		r := mrand.New(mrand.NewPCG(uint64(profile), 2))
		ssrcs := []uint32{0x1234, 0xcafe}
		seqs := []uint16{65000, 100}
		var ours, theirs [packetMTU + 64]byte
		var hdr rtp.Header
		for i := range 3000 {
			k := r.IntN(2)
			seq := seqs[k]
			switch {
			case i%97 == 5:
				seq -= 3 // a resend of a recent number
			case i%31 == 7:
				seq++ // sent before the one it follows
				seqs[k] += 2
			default:
				seqs[k]++
			}
			if i%31 == 8 {
				seq = seqs[k] - 2 // the one overtaken above
			}
			h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(i) * 3000, SSRC: ssrcs[k], Marker: i%5 == 0}
			if i%2 == 0 {
				_ = h.SetExtension(3, []byte{byte(i >> 8), byte(i)})
			}
			payload := make([]byte, 1+r.IntN(1200))
			rand.Read(payload)
			n, err := h.MarshalTo(ours[:])
			if err != nil {
				t.Fatal(err)
			}
			hl := n
			n += copy(ours[n:], payload)
			copy(theirs[:], ours[:n])
			want, err := enc.EncryptRTP(nil, theirs[:n], &hdr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := g.seal(ours[:], n, hl, h.SSRC, seq)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%v packet %d (ssrc %x seq %d): sealed bytes differ from pion's", profile, i, h.SSRC, seq)
			}
			if i%97 == 5 {
				continue // a receiver's replay check drops a repeated number
			}
			plain, err := dec.DecryptRTP(nil, got, nil)
			if err != nil {
				t.Fatalf("%v packet %d (seq %d): pion does not decrypt it: %v", profile, i, seq, err)
			}
			if !bytes.Equal(plain[hl:], payload) {
				t.Fatalf("%v packet %d: decrypted payload differs", profile, i)
			}
		}
		if len(g.st) != 2 {
			t.Fatalf("%d SSRC states, want 2", len(g.st))
		}
	}
}

// TestGCMSealerRefusesNoRoom: a buffer without room for the tag is an
// error, not a write past it.
func TestGCMSealerRefusesNoRoom(t *testing.T) {
	g, err := newGCMSealer(make([]byte, 16), make([]byte, 12))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	if _, err := g.seal(buf, 90, 12, 1, 1); err == nil {
		t.Fatal("sealed 90 bytes and a 16-byte tag into 100")
	}
	if _, err := newGCMSealer(make([]byte, 16), make([]byte, 14)); err == nil {
		t.Fatal("took a 14-byte salt")
	}
}

// TestGCMSealerDoesNotAllocate once its SSRCs are known.
func TestGCMSealerDoesNotAllocate(t *testing.T) {
	g, err := newGCMSealer(make([]byte, 16), make([]byte, 12))
	if err != nil {
		t.Fatal(err)
	}
	var buf [packetMTU + 64]byte
	seq := uint16(0)
	if n := testing.AllocsPerRun(1000, func() {
		seq++
		if _, err := g.seal(buf[:], 1200, 12, 7, seq); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%.1f allocations per packet", n)
	}
}

func BenchmarkGCMSeal(b *testing.B) {
	g, _ := newGCMSealer(make([]byte, 16), make([]byte, 12))
	var buf [packetMTU + 64]byte
	b.SetBytes(1200)
	seq := uint16(0)
	for b.Loop() {
		seq++
		g.seal(buf[:], 1200, 16, 7, seq)
	}
}
