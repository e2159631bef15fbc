# syntax=docker/dockerfile:1
# Build: docker build -t sengo-relay:dev --build-arg VERSION=dev .
# Run:   see the README's Docker section (secrets, projects, NATS access).

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
# A configuration without secrets or projects (.dockerignore keeps the
# repository's config.yaml and any *.local.yaml out of the build context).
COPY deploy/docker/config.yaml /etc/sengo-relay/config.yaml
COPY --from=build --chown=65532:65532 /out/data /data
ENV SENGO_RELAY_CONFIG=/etc/sengo-relay/config.yaml
# The embedded NATS listens on loopback inside the container, and every
# connection authenticates. To let order services outside the container
# subscribe, see the README's Docker section.
VOLUME ["/data"]
EXPOSE 8080
USER 65532:65532
# Probes /healthz on http.listen of the same configuration, so it follows
# SENGO_RELAY_HTTP_LISTEN.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/sengo-relay", "healthcheck"]
ENTRYPOINT ["/sengo-relay"]
CMD ["serve"]
