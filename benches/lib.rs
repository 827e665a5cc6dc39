//! Inputs shared by kiln's criterion benchmarks.

/// A realistic multi-stage Dockerfile repeated `copies` times (continuations, heredocs,
/// flags, JSON forms), for parser throughput.
pub fn sample_dockerfile(copies: usize) -> String {
    let unit = r#"ARG GO_VERSION=1.22
FROM golang:${GO_VERSION} AS build-STAGE
WORKDIR /src
COPY --link go.mod go.sum ./
RUN --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=secret,id=token,required=true \
    go mod download && \
    go build -o /out/app ./cmd/app
COPY <<EOF /etc/app.conf
listen = ":8080"
EOF
FROM debian:bookworm-slim AS runtime-STAGE
ENV APP_HOME=/app PATH=/app/bin:$PATH
LABEL org.opencontainers.image.title="app" version="1.0"
COPY --from=build-STAGE --chown=1000:1000 --chmod=0755 /out/app /app/bin/app
HEALTHCHECK --interval=30s --timeout=3s CMD ["/app/bin/app", "health"]
EXPOSE 8080/tcp
USER 1000:1000
ENTRYPOINT ["/app/bin/app"]
CMD ["serve"]
"#;
    let mut out = String::from("# syntax=docker/dockerfile:1\n");
    for i in 0..copies {
        out.push_str(&unit.replace("STAGE", &i.to_string()));
    }
    out
}
