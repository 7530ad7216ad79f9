# syntax=docker/dockerfile:1
# One image for the nodes (`distsync node`, the default) and the operator (`distsync-operator`).
#   docker build -t distsync:0.1.0 .
#   docker run --rm -p 7001:7001 distsync:0.1.0                       # a 1-node cluster
#   docker run --rm distsync:0.1.0 distsync-operator --help            # the operator

ARG PYTHON_VERSION=3.11

# -- build: the wheel of this repository and the wheels of all its dependencies -----------
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY node ./node
COPY operator ./operator
RUN python -m pip wheel --wheel-dir /wheels ".[operator]"

# -- runtime: slim, non-root, only the installed wheels -----------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DISTSYNC_LISTEN=0.0.0.0:7001 DISTSYNC_DATA_DIR=/data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links /wheels "distsync[operator]" \
 && groupadd --system --gid 10001 distsync \
 && useradd --system --uid 10001 --gid distsync --home-dir /data --shell /usr/sbin/nologin distsync \
 && mkdir -p /data && chown distsync:distsync /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7001
# Liveness of the node (the operator's own probe is set by its Deployment).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:7001/healthz', timeout=2)"]
ENTRYPOINT ["distsync"]
CMD ["node"]
