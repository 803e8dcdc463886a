// Package metrics exposes the server's counters to Prometheus
// (docs/api.md, "Metrics"). Everything is read when Prometheus scrapes:
// the forwarding path only bumps its own atomics.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parley-rtc/parley/events"
	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/sfu"
	"github.com/parley-rtc/parley/signaling"
	"github.com/parley-rtc/parley/turn"
)

// Sources are what the metrics are read from; TURN and Webhooks may be nil.
type Sources struct {
	Rooms     *rooms.Manager
	Engine    *sfu.Engine
	Signaling *signaling.Server
	TURN      *turn.Server
	Webhooks  *events.Webhooks
	Cluster   ClusterSource // nil on a single node
}

// ClusterSource is what the metrics read of a node of several.
type ClusterSource interface {
	Healthy() error // nil while Redis answers
	LiveNodes() int // live nodes, as last read
	RelayedSessions() int
	ChatWritesLost() uint64 // chat history writes Redis did not take
	EventsLost() uint64     // room events the other nodes did not get
}

// Handler serves the metrics in Prometheus' text format, with the Go
// runtime's and the process's.
func Handler(src Sources) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &collector{src: src})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("parley_"+name, help, labels, nil)
}

var (
	roomsDesc        = desc("rooms", "Rooms open.")
	participantsDesc = desc("participants", "Participants in rooms.")
	publishedDesc    = desc("published_tracks", "Tracks participants publish.")
	subscribedDesc   = desc("subscribed_tracks", "Forwarded copies of tracks, one per subscriber.")
	packetsInDesc    = desc("packets_in_total", "RTP packets received from publishers.")
	bytesInDesc      = desc("bytes_in_total", "RTP bytes received from publishers.")
	packetsOutDesc   = desc("packets_out_total", "RTP packets forwarded to subscribers.")
	bytesOutDesc     = desc("bytes_out_total", "RTP bytes forwarded to subscribers.")
	droppedDesc      = desc("packets_dropped_total", "Packets a slow subscriber skipped, or that an overloaded server's fan-out queue refused (all of that layer's subscribers then miss them).")
	nacksDesc        = desc("nacks_total", "Packets subscribers asked to resend (NACK).")
	plisDesc         = desc("plis_total", "Keyframe requests (PLI) sent to publishers.")
	retransDesc      = desc("retransmissions_total", "Packets resent in answer to NACKs.")
	nacksSentDesc    = desc("nacks_sent_total", "Packets the server asked publishers to resend (NACK).")
	switchesDesc     = desc("layer_switches_total", "Simulcast layer switches of subscribers.")
	paddingDesc      = desc("padding_bytes_total", "RTX padding sent to probe subscribers' bandwidth.")
	delayDesc        = desc("forward_delay_seconds", "Time from a packet's arrival from the publisher to the end of its write to a subscriber (SRTP and the system call included), per forwarded copy; resends not counted.")
	batchCallsDesc   = desc("batch_send_calls_total", "sendmmsg system calls of the batched sender (rtc.batch_send only).")
	batchMsgsDesc    = desc("batch_send_messages_total", "UDP messages the batched sender handed the kernel; with GSO one carries several packets (rtc.batch_send only).")
	batchPktsDesc    = desc("batch_send_packets_total", "Packets the batched sender sent (rtc.batch_send only).")
	batchErrsDesc    = desc("batch_send_errors_total", "Failed batched sends (rtc.batch_send only).")
	batchCauseDesc   = desc("batch_send_error_causes_total", "Failed batched sends by the kernel's error, e.g. EPERM (a firewall rule), ENETUNREACH (no route) (rtc.batch_send only).", "cause")
	batchGSODesc     = desc("batch_send_gso", "1 while the media socket takes UDP GSO, 0 once the kernel refused it (rtc.batch_send only).")
	batchReadsDesc   = desc("batch_recv_calls_total", "recvmmsg system calls of the media socket's reader (rtc.batch_send only).")
	batchReadPktDesc = desc("batch_recv_packets_total", "Datagrams the media socket's reader read with them (rtc.batch_send only).")
	sendPathDesc     = desc("subscriber_connections_total", "Subscriber connections that came up, by the path their media is sent on: direct (Parley encrypts and writes to the UDP port) or pion (pion's SRTP and ICE: ICE-TCP, rtc.direct_send off, or Parley not the DTLS server).", "send_path")
	directRTCPDesc   = desc("direct_rtcp_packets_total", "RTCP packets of direct subscriber connections read off the media socket and decrypted by Parley rather than by pion.")
	recvPathDesc     = desc("publisher_connections_total", "Publisher connections that came up, by the path their media is received on: direct (Parley reads and decrypts it off the UDP port) or pion (pion's ICE and SRTP: ICE-TCP, rtc.direct_receive off, or Parley not the DTLS server).", "receive_path")
	directRTPDesc    = desc("direct_rtp_packets_total", "Publishers' media packets read off the media socket and decrypted by Parley rather than by pion.")
	directRTPBadDesc = desc("direct_rtp_refused_total", "Publishers' media packets the direct receive path refused: replays, or not from the publisher (failed authentication).")
	lossDesc         = desc("loss_ratio", "Mean fraction of packets lost that subscribers report, over the forwarded tracks.")
	wsDesc           = desc("websocket_connections", "Open signaling WebSockets.")
	errorsDesc       = desc("signaling_errors_total", "Errors sent to clients, by code.", "code")
	dataDesc         = desc("data_messages_total", "Data channel messages handled, by type.", "type")
	drainingDesc     = desc("draining", "1 while the server is draining.")
	turnAllocsDesc   = desc("turn_allocations", "TURN allocations held.")
	turnBytesDesc    = desc("turn_relayed_bytes_total", "Bytes relayed by TURN.")
	turnAuthDesc     = desc("turn_auth_failures_total", "TURN requests refused for bad credentials.")
	hookDropDesc     = desc("webhook_dropped_total", "Webhook events given up (queue full or every retry failed).")
	hookFailDesc     = desc("webhook_failures_total", "Failed webhook deliveries (each retry counts).")
	hookSentDesc     = desc("webhook_sent_total", "Webhook events delivered.")
	redisUpDesc      = desc("cluster_redis_up", "1 while the cluster's Redis answers.")
	nodesDesc        = desc("cluster_nodes", "Live nodes in the cluster, as last read from Redis.")
	pipesDesc        = desc("cluster_relayed_sessions", "Sessions relayed between this node and another (both directions).")
	chatLostDesc     = desc("cluster_chat_writes_lost_total", "Chat history writes Redis did not take (too slow or away).")
	eventsLostDesc   = desc("cluster_events_lost_total", "Room events the other nodes did not get from this one.")
)

type collector struct{ src Sources }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{roomsDesc, participantsDesc, publishedDesc, subscribedDesc, packetsInDesc, bytesInDesc,
		packetsOutDesc, bytesOutDesc, droppedDesc, nacksDesc, plisDesc, retransDesc, nacksSentDesc, switchesDesc, paddingDesc, delayDesc, sendPathDesc, directRTCPDesc, recvPathDesc, directRTPDesc, directRTPBadDesc, lossDesc, wsDesc, errorsDesc, dataDesc,
		batchCallsDesc, batchMsgsDesc, batchPktsDesc, batchErrsDesc, batchCauseDesc, batchGSODesc, batchReadsDesc, batchReadPktDesc,
		drainingDesc, turnAllocsDesc, turnBytesDesc, turnAuthDesc, hookDropDesc, hookFailDesc, hookSentDesc, redisUpDesc, nodesDesc, pipesDesc, chatLostDesc, eventsLostDesc} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	rs := c.src.Rooms.Stats()
	gauge(roomsDesc, float64(rs.Rooms))
	gauge(participantsDesc, float64(rs.Participants))
	gauge(publishedDesc, float64(rs.PublishedTracks))
	gauge(subscribedDesc, float64(rs.SubscribedTracks))
	draining := 0.0
	if c.src.Rooms.Draining() {
		draining = 1
	}
	gauge(drainingDesc, draining)
	for typ, n := range c.src.Rooms.DataStats() {
		counter(dataDesc, n, typ)
	}

	es := c.src.Engine.Stats()
	counter(packetsInDesc, es.PacketsIn)
	counter(bytesInDesc, es.BytesIn)
	counter(packetsOutDesc, es.PacketsOut)
	counter(bytesOutDesc, es.BytesOut)
	counter(droppedDesc, es.Drops)
	counter(nacksDesc, es.NACKs)
	counter(plisDesc, es.PLIs)
	counter(retransDesc, es.Retransmissions)
	counter(nacksSentDesc, es.NACKsSent)
	counter(switchesDesc, es.LayerSwitches)
	counter(paddingDesc, es.PaddingBytes)
	ch <- forwardDelay(es.ForwardDelay)
	counter(sendPathDesc, es.DirectConnections, "direct")
	counter(sendPathDesc, es.PionConnections, "pion")
	counter(directRTCPDesc, es.DirectRTCP)
	counter(recvPathDesc, es.DirectReceive, "direct")
	counter(recvPathDesc, es.PionReceive, "pion")
	counter(directRTPDesc, es.DirectRTP)
	counter(directRTPBadDesc, es.DirectRTPBad)
	gauge(lossDesc, es.LossRatio)
	if b := es.Batch; b.Enabled {
		counter(batchCallsDesc, b.Calls)
		counter(batchMsgsDesc, b.Messages)
		counter(batchPktsDesc, b.Packets)
		counter(batchErrsDesc, b.Errors)
		for cause, n := range b.Causes {
			counter(batchCauseDesc, n, cause)
		}
		counter(batchReadsDesc, b.Reads)
		counter(batchReadPktDesc, b.ReadPkts)
		gso := 0.0
		if b.GSO {
			gso = 1
		}
		gauge(batchGSODesc, gso)
	}

	ss := c.src.Signaling.Stats()
	gauge(wsDesc, float64(ss.Connections))
	for code, n := range ss.Errors {
		counter(errorsDesc, n, code)
	}
	if cl := c.src.Cluster; cl != nil {
		up := 1.0
		if cl.Healthy() != nil {
			up = 0
		}
		gauge(redisUpDesc, up)
		gauge(nodesDesc, float64(cl.LiveNodes()))
		gauge(pipesDesc, float64(cl.RelayedSessions()))
		counter(chatLostDesc, cl.ChatWritesLost())
		counter(eventsLostDesc, cl.EventsLost())
	}
	if c.src.TURN != nil {
		ts := c.src.TURN.Stats()
		gauge(turnAllocsDesc, float64(ts.Allocations))
		counter(turnBytesDesc, uint64(ts.BytesRelayed))
		counter(turnAuthDesc, uint64(ts.AuthFailures))
	}
	if c.src.Webhooks != nil {
		dropped, failed, sent := c.src.Webhooks.Stats()
		counter(hookDropDesc, dropped)
		counter(hookFailDesc, failed)
		counter(hookSentDesc, sent)
	}
}

// forwardDelay is the engine's delay histogram as a Prometheus one
// (cumulative buckets).
func forwardDelay(d sfu.Delay) prometheus.Metric {
	bounds := sfu.DelayBounds()
	buckets := make(map[float64]uint64, len(bounds))
	var n uint64
	for i, b := range bounds {
		n += d.Counts[i]
		buckets[b] = n
	}
	n += d.Counts[len(bounds)]
	return prometheus.MustNewConstHistogram(delayDesc, n, float64(d.SumNS)/1e9, buckets)
}
