package congestion

import "math"

// The estimator follows draft-ietf-rmcat-gcc-02 and libwebrtc's
// send-side version of it: acknowledged packets are grouped by send time,
// the growth of one-way delay between groups is smoothed and its trend
// taken by linear regression over a window; a trend above an adaptive
// threshold is overuse, which cuts the rate to a fraction of what the
// receiver acknowledged; otherwise the rate grows, multiplicatively while
// far from the last point of congestion. A loss-based estimate caps it.
const (
	groupSpanUs = 5_000 // packets sent within 5 ms form one group
	burstUs     = 5_000 // ... and so do packets arriving in a burst

	trendWindow    = 20  // groups in the regression
	trendSmoothing = 0.9 // of the accumulated delay
	trendGain      = 4.0
	maxDeltas      = 60

	overuseTimeMs   = 10.0
	thresholdInit   = 12.5 // ms
	thresholdMin    = 6.0
	thresholdMax    = 600.0
	thresholdKUp    = 0.0087
	thresholdKDown  = 0.039
	thresholdMaxGap = 15.0 // ms: outliers above threshold+this do not adapt it

	beta              = 0.85    // on overuse, the rate becomes beta × acknowledged
	decreaseGapUs     = 200_000 // at most one decrease per 200 ms
	increasePerSecond = 1.08    // multiplicative increase
	responseTimeMs    = 200.0   // additive increase: one packet per response time
	ackedCap          = 1.5     // the rate grows to at most 1.5 × acknowledged
	ackedCapSlack     = 10_000  // + 10 kbit/s

	lossLow       = 0.02 // below: the loss-based estimate may grow
	lossHigh      = 0.10 // above: it shrinks
	lossGrowth    = 1.05
	lossGapUs     = 200_000
	lossAverageMs = 200.0 // time constant of the average loss
)

// usage is the detector's hypothesis about the path.
type usage int8

const (
	usageNormal usage = iota
	usageOver
	usageUnder
)

// rateState is the AIMD controller's state.
type rateState int8

const (
	rateIncrease rateState = iota
	rateHold
)

// group is packets sent within groupSpanUs of each other.
type group struct {
	firstSend, lastSend     int64 // µs, sender clock
	firstArrive, lastArrive int64 // µs, receiver clock
}

// trendPoint is one sample of the regression: arrival time (ms since the
// first group) against smoothed accumulated delay (ms).
type trendPoint struct{ x, y float64 }

// estimator is one connection's send-side bandwidth estimate. Not safe for
// concurrent use: the Controller serialises feedback. Allocation free.
type estimator struct {
	min, max float64

	// Arrival groups.
	cur, prev group
	curValid  bool
	prevValid bool

	// Trendline.
	firstArriveUs int64
	numDeltas     int
	accumulated   float64
	smoothed      float64
	window        [trendWindow]trendPoint
	wlen, whead   int
	trend         float64

	// Overuse detector.
	threshold     float64
	thresholdAtMs float64
	thresholdInit bool
	overuseMs     float64 // -1: not over the threshold
	overuseCount  int
	prevTrend     float64
	hypothesis    usage

	// AIMD rate control.
	acked          rateWindow
	delayRate      float64
	state          rateState
	lastChangeUs   int64
	lastDecreaseUs int64
	decreased      bool
	capAvg, capVar float64 // acknowledged rate at decreases: the link capacity

	// Loss-based.
	lossRate  float64
	avgLoss   float64
	lossAtUs  int64
	lossIncUs int64
	lossDecUs int64
	fbPackets int
	fbLost    int
	target    float64
}

func newEstimator(initial, minRate, maxRate int64) *estimator {
	e := &estimator{min: float64(minRate), max: float64(maxRate), threshold: thresholdInit, overuseMs: -1}
	e.delayRate = clamp(float64(initial), e.min, e.max)
	e.lossRate = e.delayRate
	e.target = e.delayRate
	e.lastChangeUs, e.lossAtUs, e.lossIncUs, e.lossDecUs = -1, -1, -1, -1
	return e
}

func clamp(v, lo, hi float64) float64 { return math.Min(math.Max(v, lo), hi) }

// packet takes one packet of a feedback: sent at sentUs (our clock), size
// bytes, arrived at arriveUs (the receiver's clock) when received.
func (e *estimator) packet(sentUs, arriveUs int64, size int, received bool) {
	e.fbPackets++
	if !received {
		e.fbLost++
		return
	}
	e.acked.add(arriveUs, size)
	if !e.curValid {
		e.cur = group{sentUs, sentUs, arriveUs, arriveUs}
		e.curValid = true
		return
	}
	if sentUs < e.cur.firstSend {
		return // reordered into an earlier group
	}
	if sentUs-e.cur.firstSend <= groupSpanUs || e.burst(sentUs, arriveUs) {
		e.cur.lastSend = max(e.cur.lastSend, sentUs)
		e.cur.lastArrive = max(e.cur.lastArrive, arriveUs)
		return
	}
	if e.prevValid {
		e.delta(e.cur.lastSend-e.prev.lastSend, e.cur.lastArrive-e.prev.lastArrive, e.cur.lastArrive)
	}
	e.prev, e.prevValid = e.cur, true
	e.cur = group{sentUs, sentUs, arriveUs, arriveUs}
}

// burst: packets that arrive back to back faster than they were sent
// (queued behind something, then released) belong to the current group.
func (e *estimator) burst(sentUs, arriveUs int64) bool {
	arriveDelta := arriveUs - e.cur.lastArrive
	sendDelta := sentUs - e.cur.lastSend
	if sendDelta == 0 {
		return true
	}
	return arriveDelta-sendDelta < 0 && arriveDelta <= burstUs && arriveUs-e.cur.firstArrive < 100_000
}

// delta feeds one inter-group delay variation to the trendline and the
// detector.
func (e *estimator) delta(sendDeltaUs, arriveDeltaUs, arriveUs int64) {
	d := float64(arriveDeltaUs-sendDeltaUs) / 1000
	if math.Abs(d) > 3000 {
		// A clock jump or a reset stream: start over.
		e.numDeltas, e.accumulated, e.smoothed, e.wlen = 0, 0, 0, 0
		return
	}
	if e.numDeltas == 0 && e.wlen == 0 {
		e.firstArriveUs = arriveUs
	}
	e.numDeltas = min(e.numDeltas+1, 1000)
	e.accumulated += d
	e.smoothed = trendSmoothing*e.smoothed + (1-trendSmoothing)*e.accumulated
	p := trendPoint{x: float64(arriveUs-e.firstArriveUs) / 1000, y: e.smoothed}
	if e.wlen < trendWindow {
		e.window[(e.whead+e.wlen)%trendWindow] = p
		e.wlen++
	} else {
		e.window[e.whead] = p
		e.whead = (e.whead + 1) % trendWindow
	}
	if e.wlen == trendWindow {
		if s, ok := e.slope(); ok {
			e.trend = s
		}
	}
	e.detect(float64(sendDeltaUs)/1000, float64(arriveUs)/1000)
}

// slope is the least squares slope of the window.
func (e *estimator) slope() (float64, bool) {
	var sx, sy float64
	for i := 0; i < e.wlen; i++ {
		sx += e.window[i].x
		sy += e.window[i].y
	}
	mx, my := sx/float64(e.wlen), sy/float64(e.wlen)
	var num, den float64
	for i := 0; i < e.wlen; i++ {
		dx := e.window[i].x - mx
		num += dx * (e.window[i].y - my)
		den += dx * dx
	}
	if den == 0 {
		return 0, false
	}
	return num / den, true
}

// detect compares the modified trend with the adaptive threshold.
func (e *estimator) detect(sendDeltaMs, nowMs float64) {
	if e.numDeltas < 2 {
		e.hypothesis = usageNormal
		return
	}
	m := float64(min(e.numDeltas, maxDeltas)) * e.trend * trendGain
	switch {
	case m > e.threshold:
		if e.overuseMs < 0 {
			e.overuseMs = sendDeltaMs / 2
		} else {
			e.overuseMs += sendDeltaMs
		}
		e.overuseCount++
		if e.overuseMs > overuseTimeMs && e.overuseCount > 1 && e.trend >= e.prevTrend {
			e.overuseMs, e.overuseCount = 0, 0
			e.hypothesis = usageOver
		}
	case m < -e.threshold:
		e.overuseMs, e.overuseCount = -1, 0
		e.hypothesis = usageUnder
	default:
		e.overuseMs, e.overuseCount = -1, 0
		e.hypothesis = usageNormal
	}
	e.prevTrend = e.trend
	e.adapt(m, nowMs)
}

// adapt moves the threshold towards |m|: quickly down, slowly up, so that
// a steady competing flow does not starve the estimate, and big outliers
// are ignored.
func (e *estimator) adapt(m, nowMs float64) {
	if !e.thresholdInit {
		e.thresholdAtMs, e.thresholdInit = nowMs, true
	}
	am := math.Abs(m)
	if am > e.threshold+thresholdMaxGap {
		e.thresholdAtMs = nowMs
		return
	}
	k := thresholdKUp
	if am < e.threshold {
		k = thresholdKDown
	}
	dt := math.Min(math.Max(nowMs-e.thresholdAtMs, 0), 100)
	e.threshold = clamp(e.threshold+k*(am-e.threshold)*dt, thresholdMin, thresholdMax)
	e.thresholdAtMs = nowMs
}

// update runs after the packets of a feedback: the rate controllers
// move, and the target is their minimum. nowUs is our clock.
func (e *estimator) update(nowUs int64) {
	acked := float64(e.acked.rate())
	e.updateDelayRate(nowUs, acked)
	e.updateLossRate(nowUs)
	e.lossRate = math.Min(e.lossRate, e.delayRate)
	e.target = clamp(e.lossRate, e.min, e.max)
}

func (e *estimator) updateDelayRate(nowUs int64, acked float64) {
	if e.lastChangeUs < 0 {
		e.lastChangeUs = nowUs
	}
	switch e.hypothesis {
	case usageOver:
		if !e.decreased || nowUs-e.lastDecreaseUs >= decreaseGapUs {
			r := beta * e.delayRate
			if acked > 0 {
				r = math.Min(beta*acked, e.delayRate)
				e.noteCapacity(acked)
			}
			e.delayRate = clamp(r, e.min, e.max)
			e.lastDecreaseUs, e.decreased = nowUs, true
		}
		e.state = rateHold
		e.lastChangeUs = nowUs
		return
	case usageUnder:
		e.state = rateHold
		e.lastChangeUs = nowUs
		return
	}
	if e.state == rateHold {
		e.state = rateIncrease
		e.lastChangeUs = nowUs
		return
	}
	dtMs := math.Min(float64(nowUs-e.lastChangeUs)/1000, 1000)
	e.lastChangeUs = nowUs
	if e.capAvg > 0 && acked > e.capAvg+3*e.capDev() {
		e.capAvg, e.capVar = 0, 0 // the link got faster: search again
	}
	r := e.delayRate
	if e.capAvg > 0 {
		// Near the capacity last seen: add about a packet per response time.
		bitsPerFrame := r / 30
		packetsPerFrame := math.Ceil(bitsPerFrame / (1200 * 8))
		r += math.Max(1000, 0.5*math.Min(dtMs/responseTimeMs, 1)*bitsPerFrame/packetsPerFrame)
	} else {
		r *= math.Pow(increasePerSecond, dtMs/1000)
	}
	if limit := ackedCap*acked + ackedCapSlack; acked > 0 && r > limit {
		r = math.Max(e.delayRate, limit)
	}
	e.delayRate = clamp(r, e.min, e.max)
}

// noteCapacity averages the acknowledged rate at decreases, an estimate
// of the link capacity near which the increase turns additive.
func (e *estimator) noteCapacity(acked float64) {
	if e.capAvg > 0 && acked < e.capAvg-3*e.capDev() {
		e.capAvg, e.capVar = 0, 0
	}
	if e.capAvg == 0 {
		e.capAvg = acked
	} else {
		e.capAvg = 0.95*e.capAvg + 0.05*acked
	}
	n := (e.capAvg - acked) / math.Max(e.capAvg, 1)
	e.capVar = 0.95*e.capVar + 0.05*n*n
	e.capVar = clamp(e.capVar, 0.4/1000, 2.5/1000)
}

// capDev is the standard deviation of the capacity estimate in bits/s.
func (e *estimator) capDev() float64 { return math.Sqrt(e.capVar) * e.capAvg }

func (e *estimator) updateLossRate(nowUs int64) {
	if e.fbPackets == 0 {
		return
	}
	ratio := float64(e.fbLost) / float64(e.fbPackets)
	e.fbPackets, e.fbLost = 0, 0
	if e.lossAtUs < 0 {
		e.avgLoss = ratio
	} else {
		dtMs := float64(nowUs-e.lossAtUs) / 1000
		e.avgLoss = ratio + math.Exp(-dtMs/lossAverageMs)*(e.avgLoss-ratio)
	}
	e.lossAtUs = nowUs
	inc, dec := math.Max(e.avgLoss, ratio), math.Min(e.avgLoss, ratio)
	switch {
	case inc < lossLow && (e.lossIncUs < 0 || nowUs-e.lossIncUs > lossGapUs):
		e.lossIncUs = nowUs
		e.lossRate = clamp(e.lossRate*lossGrowth, e.min, e.max)
	case dec > lossHigh && (e.lossDecUs < 0 || nowUs-e.lossDecUs > lossGapUs):
		e.lossDecUs = nowUs
		e.lossRate = clamp(e.lossRate*(1-0.5*dec), e.min, e.max)
	}
}

// rateWindow is the acknowledged rate over the last rateBuckets ×
// bucketUs of arrival time.
const (
	rateBuckets = 10
	bucketUs    = 50_000
	minSpanUs   = 100_000
)

type rateWindow struct {
	buckets [rateBuckets]struct {
		idx   int64
		bytes int64
	}
	first, newest int64
	started       bool
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func (r *rateWindow) add(atUs int64, size int) {
	idx := floorDiv(atUs, bucketUs)
	if r.started && idx <= floorDiv(r.newest, bucketUs)-rateBuckets {
		return // older than the window: its slot holds a newer bucket
	}
	b := &r.buckets[((idx%rateBuckets)+rateBuckets)%rateBuckets]
	if b.idx != idx {
		b.idx, b.bytes = idx, 0
	}
	b.bytes += int64(size)
	if !r.started {
		r.first, r.newest, r.started = atUs, atUs, true
	}
	r.newest = max(r.newest, atUs)
}

// rate in bits/s, 0 while unknown.
func (r *rateWindow) rate() int64 {
	if !r.started {
		return 0
	}
	cur := floorDiv(r.newest, bucketUs)
	var sum int64
	for _, b := range r.buckets {
		if b.idx > cur-rateBuckets && b.idx <= cur {
			sum += b.bytes
		}
	}
	span := r.newest - max(r.first, (cur-rateBuckets+1)*bucketUs)
	if span < minSpanUs {
		return 0
	}
	return sum * 8 * 1_000_000 / span
}
