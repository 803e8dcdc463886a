package sfu

// SRTP encryption with AES-GCM (RFC 7714) for the direct send path.
//
// pion's srtp.Context.EncryptRTP parses the packet's header again, looks
// its SSRC's state up in a map and goes through a generic cipher layer
// before the AES-GCM seal. With a subscriber's packets spread over many
// DownTracks, that map lookup misses the cache on nearly every copy: in the
// meeting workload pion's part around the seal was about 4% of the
// server's CPU (docs/performance.md). The direct path knows the header (it
// just marshalled it) and has one state per SSRC of its DownTrack, so it
// seals itself when the connection negotiated an AEAD profile, as browsers
// and pion do by default. The AES-CM/HMAC-SHA1 profiles still go through
// pion's context.
//
// The packet index follows pion's sender exactly (the rollover counter of
// RFC 3711 section 3.3.1, as srtp's nextRolloverCount and
// updateRolloverCount compute it), so a receiver sees no difference:
// TestGCMSealerMatchesPion compares the bytes with pion's.

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"

	"github.com/pion/srtp/v3"
)

const (
	srtpLabelEncryption = 0x00 // RFC 3711 section 4.3.2
	srtpLabelSalt       = 0x02
	gcmSaltLen          = 12 // RFC 7714 section 12
	gcmTagLen           = 16
)

var (
	errSRTPExhausted = errors.New("sfu: 2^48 SRTP packets sent with one key")
	errSealRoom      = errors.New("sfu: no room for the SRTP tag")
)

// gcmProfile reports whether p is one of the AEAD profiles the sealer does.
func gcmProfile(p srtp.ProtectionProfile) bool {
	return p == srtp.ProtectionProfileAeadAes128Gcm || p == srtp.ProtectionProfileAeadAes256Gcm
}

// gcmSealer encrypts the RTP packets of one DownTrack's SSRCs (media and
// RTX). Not safe for concurrent use: the directSender's lock guards it.
type gcmSealer struct {
	aead cipher.AEAD
	salt [gcmSaltLen]byte
	iv   [gcmSaltLen]byte // here, not on the stack: the AEAD interface would move it to the heap
	st   []sealState      // by SSRC; one or two
}

// sealState is one SSRC's packet index: roc<<16 | the highest sequence
// number sent (pion's srtpSSRCState).
type sealState struct {
	ssrc  uint32
	index uint64
	begun bool
}

// newGCMSealer derives the SRTP session key and salt from a connection's
// master key and salt (RFC 3711 section 4.3, key derivation rate 0).
func newGCMSealer(masterKey, masterSalt []byte) (*gcmSealer, error) {
	if len(masterSalt) != gcmSaltLen {
		return nil, errors.New("sfu: AES-GCM SRTP takes a 12-byte master salt")
	}
	master, err := aes.NewCipher(masterKey)
	if err != nil {
		return nil, err
	}
	key := make([]byte, len(masterKey))
	srtpKDF(master, srtpLabelEncryption, masterSalt, key)
	g := &gcmSealer{}
	srtpKDF(master, srtpLabelSalt, masterSalt, g.salt[:])
	block, err := aes.NewCipher(key)
	clear(key)
	if err != nil {
		return nil, err
	}
	if g.aead, err = cipher.NewGCM(block); err != nil {
		return nil, err
	}
	return g, nil
}

// srtpKDF fills out with the AES-CM key derivation's output for label:
// AES in counter mode under the master key, from the master salt with the
// label at byte 7 (the index over the derivation rate is 0).
func srtpKDF(master cipher.Block, label byte, masterSalt, out []byte) {
	var in, block [aes.BlockSize]byte
	copy(in[:], masterSalt)
	in[7] ^= label
	for n, i := 0, uint16(0); n < len(out); n, i = n+aes.BlockSize, i+1 {
		binary.BigEndian.PutUint16(in[aes.BlockSize-2:], i)
		master.Encrypt(block[:], in[:])
		copy(out[n:], block[:])
	}
}

// seal encrypts in place the packet buf[:n], whose header (hdrLen bytes)
// carries ssrc and seq, and returns it with its tag appended; buf must have
// room for the tag.
func (g *gcmSealer) seal(buf []byte, n, hdrLen int, ssrc uint32, seq uint16) ([]byte, error) {
	if n+gcmTagLen > cap(buf) || hdrLen > n {
		return nil, errSealRoom
	}
	s := g.state(ssrc)
	roc, diff, ovf := s.next(seq)
	if ovf {
		return nil, errSRTPExhausted
	}
	s.update(seq, diff)
	iv := &g.iv
	iv[0], iv[1] = 0, 0
	binary.BigEndian.PutUint32(iv[2:], ssrc)
	binary.BigEndian.PutUint32(iv[6:], roc)
	binary.BigEndian.PutUint16(iv[10:], seq)
	for i := range iv {
		iv[i] ^= g.salt[i]
	}
	out := g.aead.Seal(buf[hdrLen:hdrLen], iv[:], buf[hdrLen:n], buf[:hdrLen])
	return buf[:hdrLen+len(out)], nil
}

func (g *gcmSealer) state(ssrc uint32) *sealState {
	for i := range g.st {
		if g.st[i].ssrc == ssrc {
			return &g.st[i]
		}
	}
	g.st = append(g.st, sealState{ssrc: ssrc}) // once per SSRC
	return &g.st[len(g.st)-1]
}

// next is the rollover counter seq is sent with, its distance from the
// highest sent, and whether the index would pass 2^48 (srtp's
// nextRolloverCount).
func (s *sealState) next(seq16 uint16) (roc uint32, diff int64, overflow bool) {
	const median, size = 1 << 15, 1 << 16
	seq := int32(seq16)
	localRoc := uint32(s.index >> 16)
	localSeq := int32(s.index & (size - 1))
	roc = localRoc
	var d int32
	if s.begun {
		switch {
		case s.index <= median: // the rollover counter is 0
			d = seq - localSeq
		case localSeq < median:
			if seq-localSeq > median {
				roc, d = localRoc-1, seq-localSeq-size
			} else {
				d = seq - localSeq
			}
		default:
			if localSeq-median > seq {
				roc, d = localRoc+1, seq-localSeq+size
			} else {
				d = seq - localSeq
			}
		}
	}
	return roc, int64(d), roc == 0 && localRoc == 1<<32-1
}

// update moves the highest sent index forward (srtp's updateRolloverCount).
func (s *sealState) update(seq uint16, diff int64) {
	switch {
	case !s.begun:
		s.index |= uint64(seq)
		s.begun = true
	case diff > 0:
		s.index += uint64(diff)
	}
}
