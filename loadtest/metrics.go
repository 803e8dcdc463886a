package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// metricsSample is what a run reads from the server's /metrics.
type metricsSample struct {
	cpu        float64 // process_cpu_seconds_total
	rss        float64 // process_resident_memory_bytes
	packetsOut float64 // parley_packets_out_total
	subscribed float64 // parley_subscribed_tracks
	procs      float64 // go_sched_gomaxprocs_threads (0: not served)
	// parley_forward_delay_seconds: cumulative bucket counts by upper
	// bound (+Inf included)
	delay map[float64]float64
}

func scrape(ctx context.Context, u string) (metricsSample, error) {
	var m metricsSample
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return m, err
	}
	// Uncompressed: the run measures the server, and gzipping its metrics
	// every second cost it CPU and kept a compressor of about 0.8 MB
	// alive, counted in its memory per track.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("%s: %s", u, resp.Status)
	}
	found := 0
	m.delay = map[float64]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		if le, ok := strings.CutPrefix(name, `parley_forward_delay_seconds_bucket{le="`); ok {
			if b, err := strconv.ParseFloat(strings.TrimSuffix(le, `"}`), 64); err == nil {
				m.delay[b] = v
			}
			continue
		}
		switch name {
		case "process_cpu_seconds_total":
			m.cpu, found = v, found+1
		case "process_resident_memory_bytes":
			m.rss, found = v, found+1
		case "parley_packets_out_total":
			m.packetsOut, found = v, found+1
		case "parley_subscribed_tracks":
			m.subscribed, found = v, found+1
		case "go_sched_gomaxprocs_threads":
			m.procs = v
		}
	}
	if found < 4 {
		return m, fmt.Errorf("%s is not a Parley metrics endpoint (process_cpu_seconds_total and parley_packets_out_total missing)", u)
	}
	return m, sc.Err()
}

// delayQuantiles are the p50 and p99 of the forwarding delays observed
// between two samples, and the share at most 1 ms, interpolated within
// the histogram's buckets; ok is false when nothing was observed.
func delayQuantiles(start, end metricsSample) (p50, p99, under1ms float64, n float64, ok bool) {
	bounds := make([]float64, 0, len(end.delay))
	for b := range end.delay {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	cum := make([]float64, len(bounds))
	for i, b := range bounds {
		cum[i] = end.delay[b] - start.delay[b]
	}
	if len(cum) == 0 || cum[len(cum)-1] <= 0 {
		return 0, 0, 0, 0, false
	}
	n = cum[len(cum)-1]
	q := func(f float64) float64 {
		rank := f * n
		lo, below := 0.0, 0.0
		for i, b := range bounds {
			if cum[i] >= rank {
				if math.IsInf(b, 1) {
					return lo // beyond the last bound: report the bound
				}
				in := cum[i] - below
				if in <= 0 {
					return b
				}
				return lo + (b-lo)*(rank-below)/in
			}
			lo, below = b, cum[i]
		}
		return lo
	}
	for i, b := range bounds {
		if b <= 1e-3 {
			under1ms = cum[i] / n
		}
	}
	return q(0.5), q(0.99), under1ms, n, true
}
