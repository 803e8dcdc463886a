package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
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
}

func scrape(ctx context.Context, u string) (metricsSample, error) {
	var m metricsSample
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return m, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("%s: %s", u, resp.Status)
	}
	found := 0
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
		switch name {
		case "process_cpu_seconds_total":
			m.cpu, found = v, found+1
		case "process_resident_memory_bytes":
			m.rss, found = v, found+1
		case "parley_packets_out_total":
			m.packetsOut, found = v, found+1
		case "parley_subscribed_tracks":
			m.subscribed, found = v, found+1
		}
	}
	if found < 4 {
		return m, fmt.Errorf("%s is not a Parley metrics endpoint (process_cpu_seconds_total and parley_packets_out_total missing)", u)
	}
	return m, sc.Err()
}
