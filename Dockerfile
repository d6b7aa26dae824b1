# The Xano audit monitor: one process, one SQLite archive on the /data volume.
#
#   docker build -t xano-audit-monitor .
#   docker run -d --name audit-monitor -v audit-data:/data \
#     -v "$PWD/audit-monitor.yaml:/config/audit-monitor.yaml:ro" -e AUDIT_MONITOR_CONFIG=/config/audit-monitor.yaml \
#     -e XANO_META_TOKEN -e AUDIT_MONITOR_API_TOKEN -p 127.0.0.1:9108:9108 xano-audit-monitor
#
# See README.md "Deployment" and docker-compose.example.yml.
# Pinned to a patch release so that a rebuild gets the same interpreter; bump it deliberately.
FROM python:3.12.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A plain (not editable) install of the package: the wheel carries the rule pack and templates.
COPY pyproject.toml README.md LICENSE /src/
COPY monitor /src/monitor
COPY rules /src/rules
COPY templates /src/templates
RUN pip install /src && rm -rf /src

# Never root: the archive holds user emails and IPs, and the process needs no privilege.
RUN groupadd --system --gid 10001 monitor \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin monitor \
    && mkdir -p /data && chown 10001:10001 /data && chmod 0700 /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

# AUDIT_MONITOR_LISTEN is server.listen when the config file does not set it: in a container the
# endpoint must be reachable from outside the container's loopback. Such an address needs an API token to
# start: give AUDIT_MONITOR_API_TOKEN (or _FILE), or server.tokens in the config. /healthz and /metrics
# stay open, so the HEALTHCHECK below needs none.
ENV AUDIT_MONITOR_CONFIG=/data/audit-monitor.yaml \
    AUDIT_MONITOR_LISTEN=0.0.0.0:9108 \
    AUDIT_MONITOR_HEALTHCHECK_URL=http://127.0.0.1:9108/healthz
EXPOSE 9108

# /healthz answers 503 "starting" until every source's first cycle is done (a first backfill can take
# minutes): the start period covers it. No curl in a slim image; Python's urllib is there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.error, urllib.request\ntry:\n    r = urllib.request.urlopen(os.environ['AUDIT_MONITOR_HEALTHCHECK_URL'], timeout=4)\nexcept urllib.error.HTTPError as e:\n    r = e\nprint(r.read().decode()[:2000])\nsys.exit(0 if r.getcode() == 200 else 1)"]

# SIGTERM finishes (or, mid-backfill, abandons) the cycle in flight and exits 0 within seconds.
STOPSIGNAL SIGTERM
CMD ["audit-monitor", "run"]
