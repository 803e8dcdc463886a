// Package sfu forwards RTP between pion peer connections without decoding.
//
// A participant has two peer connections: a Publisher, on which the client
// offers its own tracks, and a Subscriber, on which the server offers the
// tracks of everybody else. Every incoming track is a Track with one read loop;
// every outgoing copy of it is a DownTrack with its own queue and writer, so
// a slow subscriber never delays the others.
package sfu

import (
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/sdp/v3"
	"github.com/pion/transport/v4"
	"github.com/pion/webrtc/v4"
)

// Config configures the media side of the server.
type Config struct {
	// UDPPort is the one UDP port every peer's media is multiplexed on.
	// 0 picks a free port (tests).
	UDPPort int
	// TCPPort is the ICE-TCP fallback port for networks that block UDP;
	// 0 switches ICE over TCP off; -1 picks a free port (tests).
	TCPPort int
	// ListenIP binds the UDP port to one address; empty means all.
	ListenIP string
	// PublicIPs are put in host candidates instead of the interface
	// addresses (1:1 NAT, e.g. a cloud VM's public address).
	PublicIPs []string
	// IncludeLoopback gathers loopback candidates (local development, tests).
	IncludeLoopback bool
	// ICEFailGrace is how long a connection whose ICE failed may take to
	// be restarted by its client before it is reported failed.
	ICEFailGrace time.Duration
	// Net, when set, replaces the host network (tests: pion's vnet, to
	// simulate loss, delay and bandwidth limits). ICE-TCP needs the host
	// network: TCPPort must be 0.
	Net transport.Net
	// NoBatch makes every datagram on the direct paths a system call of
	// its own. Otherwise (Linux) the goroutines that forward batch theirs
	// (sendbatch.go): the media socket is read with recvmmsg, and the
	// copies made meanwhile go out with one sendmmsg, a burst to one
	// address as one UDP GSO message.
	NoBatch bool
	// PionSend sends subscribers' media through pion's SRTP session and
	// ICE connection instead of the direct path (direct.go), which
	// encrypts and writes to the UDP socket itself.
	PionSend bool
	// PionReceive receives publishers' media through pion's ICE
	// connection and SRTP session instead of the direct receive path
	// (recv.go), which reads and decrypts it off the UDP socket itself.
	PionReceive bool
}

// Validate checks the config and names the first bad key.
func (c *Config) Validate() error {
	if c.UDPPort < 0 || c.UDPPort > 65535 {
		return fmt.Errorf("%w: rtc.udp_port: %d is not a port (0-65535)", ErrBadConfig, c.UDPPort)
	}
	if c.TCPPort < -1 || c.TCPPort > 65535 {
		return fmt.Errorf("%w: rtc.tcp_port: %d is not a port (0 switches ICE-TCP off)", ErrBadConfig, c.TCPPort)
	}
	if c.ListenIP != "" && net.ParseIP(c.ListenIP) == nil {
		return fmt.Errorf("%w: rtc.listen_ip: %q is not an IP address", ErrBadConfig, c.ListenIP)
	}
	for _, ip := range c.PublicIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("%w: rtc.public_ips: %q is not an IP address", ErrBadConfig, ip)
		}
	}
	if c.Net != nil && c.TCPPort != 0 {
		return fmt.Errorf("%w: rtc.tcp_port: ICE-TCP needs the host network", ErrBadConfig)
	}
	return nil
}

// Engine holds what all peer connections share: the UDP socket and settings.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	conn   net.PacketConn
	wconn  net.PacketConn // Parley's own writes to conn's socket (ownWriter)
	wclose func()
	mux    *ice.UDPMuxDefault
	tap    *rtcpTap // the direct paths' reader on conn; nil: PionSend and PionReceive
	tcpL   net.Listener
	tcpMux *ice.TCPMuxDefault
	stats  engineStats
}

// NewEngine opens the media UDP port.
func NewEngine(cfg Config, log *slog.Logger) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	addr := &net.UDPAddr{Port: cfg.UDPPort}
	if cfg.ListenIP != "" {
		addr.IP = net.ParseIP(cfg.ListenIP)
	}
	var conn net.PacketConn
	var err error
	if cfg.Net != nil {
		conn, err = cfg.Net.ListenUDP("udp4", addr)
	} else {
		var uc *net.UDPConn
		uc, err = net.ListenUDP("udp", addr)
		if err == nil {
			_ = uc.SetReadBuffer(4 << 20)
			_ = uc.SetWriteBuffer(4 << 20)
			conn = uc
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sfu: cannot open media port udp %s (rtc.udp_port; is another server using it?): %w", addr, err)
	}
	e := &Engine{cfg: cfg, log: log, conn: conn}
	e.wconn, e.wclose = ownWriter(conn)
	muxConn := conn
	if !cfg.PionSend || !cfg.PionReceive {
		e.tap = newRTCPTap(conn, e.wconn, !cfg.NoBatch)
		muxConn = e.tap
	}
	e.mux = ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: muxConn, Net: cfg.Net})
	e.stats.init()
	if cfg.TCPPort != 0 {
		taddr := &net.TCPAddr{IP: addr.IP, Port: max(cfg.TCPPort, 0)}
		l, err := net.ListenTCP("tcp", taddr)
		if err != nil {
			_ = e.mux.Close()
			e.wclose()
			return nil, fmt.Errorf("sfu: cannot open ICE-TCP port tcp %s (rtc.tcp_port): %w", taddr, err)
		}
		e.tcpL = l
		e.tcpMux = ice.NewTCPMuxDefault(ice.TCPMuxParams{Listener: l, ReadBufferSize: 64, WriteBufferSize: 4 << 20,
			FirstStunBindTimeout: 10 * time.Second})
	}
	return e, nil
}

// TCPAddr is the ICE-TCP address, or nil when ICE-TCP is off.
func (e *Engine) TCPAddr() net.Addr {
	if e.tcpL == nil {
		return nil
	}
	return e.tcpL.Addr()
}

// UDPAddr is the address of the media port.
func (e *Engine) UDPAddr() net.Addr { return e.conn.LocalAddr() }

// Close closes the media port. Peer connections must be closed first.
func (e *Engine) Close() error {
	if e.tcpMux != nil {
		_ = e.tcpMux.Close()
	}
	err := e.mux.Close()
	e.wclose()
	return err
}

// newPublisherConnection builds the connection a client publishes on: it
// receives simulcast (MID/RID header extensions) and audio levels, lets the
// layers ask for lost packets (NACK) and keyframes, and sends receiver reports and
// transport-wide congestion control feedback so the client can adapt its
// own sending rate.
//
// With keys (the direct receive path, recv.go) Parley is the DTLS server
// and pion's transport-wide feedback and receiver reports step aside when
// off is set.
func (e *Engine) newPublisherConnection(keys *dtlsKeys, off *atomic.Bool) (*webrtc.PeerConnection, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	reg := &interceptor.Registry{}
	se := webrtc.SettingEngine{}
	if keys != nil {
		if err := se.SetAnsweringDTLSRole(webrtc.DTLSRoleServer); err != nil {
			return nil, err
		}
		se.SetDTLSKeyLogWriter(keys)
		se.SetDTLSServerHelloMessageHook(keys.serverHello)
	}
	// NACKs come from the layers' own generators (nackgen.go). Parley
	// sends no media here: no sender reports.
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack"}, webrtc.RTPCodecTypeVideo)
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack", Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
	rr, err := report.NewReceiverInterceptor()
	if err != nil {
		return nil, err
	}
	reg.Add(steppableFactory{inner: rr, off: off})
	if err := webrtc.ConfigureSimulcastExtensionHeaders(m); err != nil {
		return nil, err
	}
	if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		m.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC}, kind)
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.TransportCCURI}, kind); err != nil {
			return nil, err
		}
	}
	fb, err := twcc.NewSenderInterceptor()
	if err != nil {
		return nil, err
	}
	reg.Add(steppableFactory{inner: fb, off: off})
	return e.newPeerConnection(m, reg, se)
}

// newSubscriberConnection builds the connection the server sends on. NACKs
// are answered by the DownTracks from the tracks' rings (not by pion's
// responder, which would keep a copy of every packet per subscriber);
// transport-wide sequence numbers feed the bandwidth estimator b.
func (e *Engine) newSubscriberConnection(b *bwe, keys *dtlsKeys) (*webrtc.PeerConnection, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	reg := &interceptor.Registry{}
	se := webrtc.SettingEngine{}
	if keys != nil {
		// what the direct path's SRTP keys are derived from (direct.go)
		se.SetDTLSKeyLogWriter(keys)
		se.SetDTLSServerHelloMessageHook(keys.serverHello)
	}
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack"}, webrtc.RTPCodecTypeVideo)
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack", Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBGoogREMB}, webrtc.RTPCodecTypeVideo)
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		m.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC}, kind)
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.TransportCCURI}, kind); err != nil {
			return nil, err
		}
	}
	// Interceptors nearest the network come first: the congestion
	// controller stamps the transport-wide sequence number as the packet
	// leaves, and takes the feedback out before the rest of the RTCP goes up.
	reg.Add(b.cc)
	// No report interceptors: the DownTracks' sender reports come from
	// Parley's own counters (Subscriber.sendReports), which see the direct
	// path's packets too; and this connection receives no media, so
	// pion's receiver-report interceptor would only parse every incoming
	// RTCP packet once more, looking for sender reports that never come.
	return e.newPeerConnection(m, reg, se)
}

// newPeerConnection builds a peer connection with its own media engine and
// interceptor registry on the engine's sockets.
func (e *Engine) newPeerConnection(m *webrtc.MediaEngine, reg *interceptor.Registry, se webrtc.SettingEngine) (*webrtc.PeerConnection, error) {
	se.SetICEUDPMux(e.mux)
	if e.cfg.Net != nil {
		se.SetNet(e.cfg.Net)
	}
	types := []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6}
	if e.tcpMux != nil {
		se.SetICETCPMux(e.tcpMux)
		types = append(types, webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6)
	}
	se.SetNetworkTypes(types)
	se.SetIncludeLoopbackCandidate(e.cfg.IncludeLoopback)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(5*time.Second, 25*time.Second, 2*time.Second)
	se.SetSCTPMaxMessageSize(MaxDataMessage)
	if len(e.cfg.PublicIPs) > 0 {
		se.SetNAT1To1IPs(e.cfg.PublicIPs, webrtc.ICECandidateTypeHost)
	}
	if e.cfg.ListenIP != "" {
		want := net.ParseIP(e.cfg.ListenIP)
		se.SetIPFilter(func(ip net.IP) bool { return want.IsUnspecified() || ip.Equal(want) })
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	return api.NewPeerConnection(webrtc.Configuration{SDPSemantics: webrtc.SDPSemanticsUnifiedPlan})
}
