# syntax=docker/dockerfile:1
# Build: docker build -t sengo-relay .
# Run:   docker run -p 8080:8080 -v sengo-data:/data sengo-relay

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sengo-relay ./cmd/sengo-relay \
 && mkdir -p /out/data

# Static binary on a minimal base with a non-root user (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sengo-relay /sengo-relay
COPY config.yaml /etc/sengo-relay/config.yaml
COPY --from=build --chown=65532:65532 /out/data /data
ENV SENGO_RELAY_DATA_DIR=/data \
    SENGO_RELAY_HTTP_LISTEN=:8080
# The embedded NATS listens on loopback inside the container, and every
# connection authenticates. To let order services outside the container
# subscribe, set SENGO_RELAY_NATS_EMBEDDED_SUBSCRIBER_PASSWORD_FILE to a
# secret and SENGO_RELAY_NATS_EMBEDDED_LISTEN=0.0.0.0:4222 (refused without
# that password), publish 4222 only to your private network, and put TLS in
# front: NATS sends the password in the clear.
VOLUME ["/data"]
EXPOSE 8080
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/sengo-relay", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/sengo-relay"]
CMD ["serve", "--config", "/etc/sengo-relay/config.yaml"]
