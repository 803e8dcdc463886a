package sfu

// The direct send path: a subscriber connection's media packets are
// encrypted by Parley and written straight to the engine's UDP socket,
// instead of through pion's per-packet chain (interceptors, the SRTP
// session's lock and map, the mux endpoint, ICE's candidate pair with its
// per-packet statistics and mutexes, the UDP mux). docs/performance.md has
// the measurements.
//
// pion does not hand out a connection's SRTP keys. They are derived here,
// as pion derives them (RFC 5764 section 4.2, the exporter of RFC 5705),
// from what the DTLS handshake shows through public settings: the master
// secret and client random from the key log, the server random, cipher
// suite and SRTP profile from the ServerHello that Parley sends. So the
// path needs Parley to be the DTLS server, which it is on every subscriber
// connection whose answer says a=setup:active (browsers and pion always
// do: the server makes the offer). Otherwise, and whenever the selected
// ICE pair is not UDP on the engine's own socket (ICE-TCP), the connection
// uses pion's path.
//
// An SSRC's packets are encrypted by one SRTP context for the whole call:
// its rollover counter would be wrong in another. So a connection that
// sent directly and then moves to a pair the path cannot write to (an ICE
// restart onto ICE-TCP) is failed, and the client connects again, rather
// than handed to pion's context mid-stream.

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/congestion"
)

// dtlsKeys collects, for one connection, what the SRTP keys are derived
// from. It is the connection's DTLS key log writer and ServerHello hook.
type dtlsKeys struct {
	mu           sync.Mutex
	clientRandom []byte
	master       []byte
	serverRandom [handshake.RandomLength]byte
	suite        uint16
	profile      srtp.ProtectionProfile
	hello        bool // a ServerHello was sent (Parley is the DTLS server)
}

// Write takes one key log line: "CLIENT_RANDOM <client random> <master secret>".
func (k *dtlsKeys) Write(p []byte) (int, error) {
	f := bytes.Fields(p)
	if len(f) == 3 && string(f[0]) == "CLIENT_RANDOM" {
		cr, err1 := hex.DecodeString(string(f[1]))
		ms, err2 := hex.DecodeString(string(f[2]))
		if err1 == nil && err2 == nil {
			k.mu.Lock()
			k.clientRandom, k.master = cr, ms
			k.mu.Unlock()
		}
	}
	return len(p), nil
}

// serverHello records the random, cipher suite and SRTP profile of the
// ServerHello Parley sends, and sends it unchanged.
func (k *dtlsKeys) serverHello(m handshake.MessageServerHello) handshake.Message {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.hello = false
	if m.CipherSuiteID == nil {
		return &m
	}
	for _, e := range m.Extensions {
		if u, ok := e.(*extension.UseSRTP); ok && len(u.ProtectionProfiles) == 1 && len(u.MasterKeyIdentifier) == 0 {
			k.serverRandom = m.Random.MarshalFixed()
			k.suite = *m.CipherSuiteID
			k.profile = srtp.ProtectionProfile(u.ProtectionProfiles[0])
			k.hello = true
		}
	}
	return &m
}

// forget drops the master secret once the keys are derived: only the SRTP
// contexts hold key material from then on.
func (k *dtlsKeys) forget() {
	k.mu.Lock()
	clear(k.master)
	k.master, k.clientRandom = nil, nil
	k.mu.Unlock()
}

var errNoDirectKeys = errors.New("sfu: the DTLS handshake did not show the SRTP keys (Parley was not the DTLS server)")

// srtpKeys are one direction's SRTP master key and salt.
type srtpKeys struct{ key, salt []byte }

// keys derives the master keys and salts of both directions: Parley's
// (the DTLS server's) and the client's.
func (k *dtlsKeys) keys() (local, remote srtpKeys, profile srtp.ProtectionProfile, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.hello || len(k.master) == 0 || len(k.clientRandom) != handshake.RandomLength {
		return local, remote, 0, errNoDirectKeys
	}
	keyLen, err := k.profile.KeyLen()
	if err != nil {
		return local, remote, 0, err
	}
	saltLen, err := k.profile.SaltLen()
	if err != nil {
		return local, remote, 0, err
	}
	// The PRF's hash is the cipher suite's: SHA-384 for the two *_SHA384
	// suites, SHA-256 for every other suite pion offers.
	h := prf.HashFunc(sha256.New)
	if id := dtls.CipherSuiteID(k.suite); id == dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 || id == dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 {
		h = sha512.New384
	}
	seed := append(append([]byte("EXTRACTOR-dtls_srtp"), k.clientRandom...), k.serverRandom[:]...)
	m, err := prf.PHash(k.master, seed, 2*keyLen+2*saltLen, h)
	if err != nil {
		return local, remote, 0, err
	}
	// client key, server key, client salt, server salt
	remote = srtpKeys{key: m[:keyLen], salt: m[2*keyLen : 2*keyLen+saltLen]}
	local = srtpKeys{key: m[keyLen : 2*keyLen], salt: m[2*keyLen+saltLen:]}
	return local, remote, k.profile, nil
}

// directPath is where a subscriber connection's direct packets go. key,
// salt and profile never change for a connection; the address follows the
// selected ICE pair (nil: the pair is not on the engine's UDP socket).
type directPath struct {
	conn    net.PacketConn
	cc      *congestion.Controller
	key     []byte
	salt    []byte
	profile srtp.ProtectionProfile
	addr    atomic.Pointer[net.UDPAddr]
	rtcp    *rtcpReader              // the client's RTCP, taken off the socket (rtcptap.go); nil: through pion
	dst     atomic.Pointer[destAddr] // addr as batched sends write it (sendbatch.go)
}

// directStart is what a connection's direct path starts from once it is
// up: both directions' SRTP keys (the master secret is forgotten after),
// and the selected ICE pair's remote address, which the path must be able
// to write to.
func directStart(k *dtlsKeys, pc *webrtc.PeerConnection) (local, remote srtpKeys, profile srtp.ProtectionProfile, addr *net.UDPAddr, err error) {
	local, remote, profile, err = k.keys()
	k.forget()
	if err != nil {
		return local, remote, 0, nil, err
	}
	pair, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if addr = pairAddr(pair); err != nil || addr == nil {
		return local, remote, 0, nil, fmt.Errorf("%w (pair %v)", errNoDirectPair, pair)
	}
	return local, remote, profile, addr, nil
}

// pairAddr is the remote address of a selected pair the direct path can
// write to: UDP on both sides, the local candidate one of the engine's own
// socket's (Parley gathers no relayed candidates of its own).
func pairAddr(p *webrtc.ICECandidatePair) *net.UDPAddr {
	if p == nil || p.Local == nil || p.Remote == nil ||
		p.Local.Protocol != webrtc.ICEProtocolUDP || p.Remote.Protocol != webrtc.ICEProtocolUDP ||
		p.Local.Typ == webrtc.ICECandidateTypeRelay {
		return nil
	}
	ip := net.ParseIP(p.Remote.Address)
	if ip == nil {
		return nil
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return &net.UDPAddr{IP: ip, Port: int(p.Remote.Port)}
}

// directSender is one DownTrack's encryption state on a direct path: one
// SRTP sealer (AEAD profiles) or context (the others) for the DownTrack's
// SSRCs (media and RTX) for its whole life.
type directSender struct {
	mu   sync.Mutex // the context and buffer: the writer and the NACK/padding path
	path *directPath
	gcm  *gcmSealer    // AEAD profiles (srtpgcm.go)
	ctx  *srtp.Context // the others
	tcc  uint8         // transport-cc header extension id; 0: not negotiated
	ext  [2]byte
	hdr  rtp.Header // EncryptRTP's parse of the packet
	buf  [packetMTU + 64]byte
}

func newDirectSender(p *directPath, tcc uint8) (*directSender, error) {
	if gcmProfile(p.profile) {
		g, err := newGCMSealer(p.key, p.salt)
		if err != nil {
			return nil, err
		}
		return &directSender{path: p, gcm: g, tcc: tcc}, nil
	}
	ctx, err := srtp.CreateContext(p.key, p.salt, p.profile)
	if err != nil {
		return nil, err
	}
	return &directSender{path: p, ctx: ctx, tcc: tcc}, nil
}

var errNoDirectPair = errors.New("sfu: the selected ICE pair is not on the media UDP socket")

// write stamps the transport-wide sequence number, encrypts and sends one
// packet, or with q queues it in q (queued: note is counted when q sends
// it). h is changed (its extension). No allocation.
func (s *directSender) write(h *rtp.Header, payload []byte, q *sendBatch, note txNote) (queued bool, err error) {
	addr := s.path.addr.Load()
	if addr == nil {
		return false, errNoDirectPair
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tcc != 0 {
		made := note.made
		if made == 0 {
			made = monoNow()
		}
		s.path.cc.StampAt(s.tcc, h, len(payload), &s.ext, made/1e3)
	}
	buf := s.buf[:]
	if q != nil {
		buf = q.next()
	}
	hl, err := h.MarshalTo(buf)
	if err != nil {
		return false, err
	}
	if hl+len(payload) > packetMTU {
		return false, errTooLarge
	}
	n := hl + copy(buf[hl:], payload)
	var out []byte
	if s.gcm != nil {
		out, err = s.gcm.seal(buf, n, hl, h.SSRC, h.SequenceNumber)
	} else {
		out, err = s.ctx.EncryptRTP(buf[:0], buf[:n], &s.hdr)
	}
	if err != nil {
		return false, err
	}
	if q != nil {
		return true, q.commit(s.path, addr, len(out), note)
	}
	_, err = s.path.conn.WriteTo(out, addr)
	return false, err
}

var errTooLarge = errors.New("sfu: packet larger than the MTU")
