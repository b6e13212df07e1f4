# nexo_actors container image (SPEC §9).
#
#   docker build -t nexo-actors:latest .
#   docker build --build-arg WITH_TOOLS=0 -t nexo-actors:slim .      # without ffmpeg/tmux/tesseract/yt-dlp
#   docker run --rm -v "$PWD/data:/app/data" -p 8080:8080 -p 9090:9090 nexo-actors:latest
#
# Two stages on the same Debian base: the builder installs the package into a
# venv at /opt/venv; the runtime copies only that venv, so compilers and pip's
# caches never reach the final image. Nothing is fetched at run time.

# The base is an ARG so a mirror or a pinned digest can be used
# (--build-arg BASE_IMAGE=debian:bookworm-slim@sha256:...). Both stages must
# use the same base: the venv's python is a symlink to the base's
# /usr/bin/python3, which the runtime stage therefore has to provide too.
ARG BASE_IMAGE=debian:bookworm-slim

# --- builder ------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# Build-time only (an ARG, not an ENV): keeps apt from prompting.
ARG DEBIAN_FRONTEND=noninteractive

# Debian's python3 (3.11 on bookworm, what setup.cfg requires at least).
# python3-dev + build-essential are a fallback for a dependency without a
# wheel for the target arch; amd64 and arm64 get wheels and never use them.
# They stay in this stage only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 \
        python3-venv \
        python3-dev \
        build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv

WORKDIR /src
# Only what `pip install .` reads: metadata (README.md is the long
# description) and the package. conf/, tests/ and bench/ are not part of it.
COPY setup.cfg pyproject.toml README.md ./
COPY nexo_actors ./nexo_actors

# A regular (not editable) install: the image must not depend on /src.
# `nexo --version` fails the build early if the console script is broken.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/venv/bin/nexo --version

# --- runtime ------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ARG DEBIAN_FRONTEND=noninteractive
# 1 (default) installs the operator tools of the seed that skills shell out
# to; 0 skips them for a smaller image.
ARG WITH_TOOLS=1
# Set by CI: --build-arg VERSION=$(git describe) --build-arg SOURCE_URL=https://github.com/<owner>/<repo>
ARG VERSION=0.1.0
ARG SOURCE_URL=unset

LABEL org.opencontainers.image.title="nexo-actors" \
      org.opencontainers.image.description="Actor-model runtime for LLM agents: NATS bus with a disk queue, supervised worker processes, health and metrics sidecar" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"

# python3: the interpreter the copied venv points at.
# ca-certificates: TLS to LLM APIs and to a tls:// NATS.
# curl: the HEALTHCHECK below (and compose's).
# dumb-init: PID 1 — forwards SIGTERM from `docker stop` and reaps zombies
#   (Chromium and tool subprocesses leave orphans behind).
# chromium + fonts: Debian's Chromium exists on every arch we build (amd64,
#   arm64), unlike Google Chrome, so the browser plugin behaves the same
#   everywhere; without fonts pages render as boxes and screenshots are useless.
# WITH_TOOLS=1: the seed's tools for skills: media (ffmpeg, yt-dlp), OCR
#   (tesseract-ocr, which pulls the English data), long-running shells (tmux).
#   Debian's yt-dlp ages fast; a derived image can pin a newer one.
# `chromium --version` fails the build if the browser cannot even start.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 \
        ca-certificates \
        curl \
        dumb-init \
        chromium \
        fonts-liberation \
        fonts-noto-color-emoji \
    && if [ "$WITH_TOOLS" = "1" ]; then \
        apt-get install -y --no-install-recommends \
            ffmpeg \
            tmux \
            tesseract-ocr \
            yt-dlp; \
    fi \
    && rm -rf /var/lib/apt/lists/* \
    && chromium --version

# A fixed uid/gid (10001, above any host's regular users) so operators can
# `chown -R 10001:10001 ./data ./secrets/*.txt` on the host before
# `docker compose up`: a root-owned bind mount is the seed's "readonly
# database" gotcha. Only /app/data is writable; config and extensions stay
# root-owned and read-only to the runtime. The home directory gives Chromium
# and fontconfig somewhere to write their caches.
RUN groupadd --system --gid 10001 nexo \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/nexo \
        --shell /usr/sbin/nologin nexo \
    && mkdir -p /app/data /app/extensions \
    && chown 10001:10001 /app/data

COPY --from=builder /opt/venv /opt/venv
# The venv first on PATH: `nexo` in ENTRYPOINT and in `docker compose exec nexo nexo ...`.
ENV PATH="/opt/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/venv

# Relative paths of the embedded config (./data, ./extensions) resolve here.
WORKDIR /app
# The embedded default config, so the image runs without a config mount;
# conf/docker comes along as /app/config/docker (compose mounts ./conf over it).
COPY conf /app/config
COPY extensions /app/extensions

# production = JSON log lines on stderr; unbuffered so `docker logs` is live.
# NEXO_CONFIG: the config dir every `nexo` command uses without --config, so
# `docker exec ... nexo dlq list` looks at the same data as the daemon.
ENV AGENT_ENV=production \
    LOG_LEVEL=info \
    NEXO_CONFIG=/app/config \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001

# 8080: /health and /ready (and MCP later); 9090: Prometheus /metrics.
EXPOSE 8080 9090

# /ready, not /health: a runtime that is up but not serving (boot, broker
# outage with fallback off, failed agent) is unhealthy. Shell form with
# `|| exit 1` because Docker reserves exit codes other than 0 and 1, and curl
# fails with 7 or 22. start-period covers extension discovery and agents
# attaching to their topics.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/ready || exit 1

# Exec form: dumb-init is PID 1 and receives `docker stop`'s SIGTERM itself.
ENTRYPOINT ["dumb-init", "--", "nexo"]
# Arguments to nexo: with no subcommand it runs the daemon. Compose replaces
# this with ["--config", "/app/config/docker"].
CMD ["--config", "/app/config"]
