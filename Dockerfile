# The docexec image: one static binary for every role (`docexec manager`,
# `docexec executor`, `docexec local`).
#
#   docker build -t docexec/docexec:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t docexec/docexec:dev .

# Build on the builder's own platform and cross-compile (no emulation).
FROM --platform=$BUILDPLATFORM golang:1.26 AS builder
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src

# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w" -o /out/docexec .

# Static, no shell, no package manager, non-root (65532).
FROM gcr.io/distroless/static:nonroot
COPY --from=builder /out/docexec /docexec
USER 65532:65532
ENTRYPOINT ["/docexec"]
