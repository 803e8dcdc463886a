# Multi-stage build: a static binary on a minimal base image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /parley ./cmd/parley

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /parley /parley
COPY configs/parley.yaml /etc/parley/parley.yaml
# HTTP/WebSocket, ICE-TCP, media UDP, TURN UDP/TCP, TURN TLS: the defaults.
# A second node on the same host takes other ports (PARLEY_HTTP_LISTEN,
# PARLEY_RTC_UDP_PORT, ...; see docker-compose.yml), and several nodes also
# need PARLEY_REDIS_ADDR (docs/scaling.md).
EXPOSE 7880/tcp 7881/tcp 7882/udp 3478/udp 3478/tcp 5349/tcp
ENTRYPOINT ["/parley"]
CMD ["serve", "--config", "/etc/parley/parley.yaml"]
