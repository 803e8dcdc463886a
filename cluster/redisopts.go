package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisChannelOptions size the pub/sub receive buffer and health check.
func redisChannelOptions() []redis.ChannelOption {
	return []redis.ChannelOption{redis.WithChannelSize(4096), redis.WithChannelHealthCheckInterval(3 * time.Second), redis.WithChannelSendTimeout(time.Second)}
}

var redisLogOnce sync.Once

// quietRedisLog sends go-redis's own log lines (one per failed dial while
// Redis is away) to the first node's logger at debug level: the node
// reports the outage itself, once. go-redis has one logger per process.
func quietRedisLog(log *slog.Logger) {
	redisLogOnce.Do(func() { redis.SetLogger(redisLogger{log}) })
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug("redis client", "msg", fmt.Sprintf(format, v...))
}
