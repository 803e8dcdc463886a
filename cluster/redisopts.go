package cluster

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// redisChannelOptions size the pub/sub receive buffer and health check.
func redisChannelOptions() []redis.ChannelOption {
	return []redis.ChannelOption{redis.WithChannelSize(4096), redis.WithChannelHealthCheckInterval(3 * time.Second), redis.WithChannelSendTimeout(time.Second)}
}
