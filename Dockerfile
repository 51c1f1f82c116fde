# syntax=docker/dockerfile:1
# One image for every Dealflow service; the command picks the service:
#   docker run … ghcr.io/dealflow/dealflow:0.1.0 dealflow_opportunity serve
#   docker run … ghcr.io/dealflow/dealflow:0.1.0 dealflow_opportunity migrate
# Everything is configured by environment variables (see dealflow_common.settings).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

# The same uv as the Makefile pins.
RUN pip install uv==0.13.9

WORKDIR /app

# 1. Third-party dependencies only. With --frozen, uv takes them from the lockfile and
#    needs neither the members' sources nor their pyproject.toml, so this layer is rebuilt
#    only when the root pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --all-packages --no-dev --no-editable --no-install-workspace

# 2. The workspace packages (libs/common and every service), installed as wheels rather
#    than editable, so that /app/.venv stands alone without the sources.
COPY libs/ libs/
COPY services/ services/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --all-packages --no-dev --no-editable

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="dealflow" \
      org.opencontainers.image.description="Dealflow services (python -m dealflow_<name> serve|migrate)" \
      org.opencontainers.image.version="0.1.0"

ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A numeric, non-root user: Kubernetes can only check runAsNonRoot against a numeric UID.
RUN groupadd --system --gid 10001 dealflow \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin dealflow

# The environment only (owned by root, read-only for the service user); no sources, no uv.
COPY --from=builder /app/.venv /app/.venv

WORKDIR /app
USER 10001:10001

# /healthz answers while the process serves HTTP (no token). DEALFLOW_PORT is set by
# docker-compose.yml and the Kubernetes ConfigMaps; 8000 is the settings' own default.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${DEALFLOW_PORT:-8000}/healthz', timeout=4)" || exit 1

ENTRYPOINT ["python", "-m"]
CMD ["dealflow_opportunity", "serve"]
