# One image for every fieldwatch role; the command picks the role.
FROM python:3.11-slim

# The processes run as an unprivileged user that owns nothing but the gateway's state directory
# (a named volume mounted there starts with this owner); the code stays root's, read-only to it.
# docker-compose.yml also makes the root filesystem read-only: only /tmp (a tmpfs) is writable.
RUN groupadd --system --gid 10001 fieldwatch \
    && useradd --system --uid 10001 --gid fieldwatch --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin fieldwatch \
    && mkdir -p /var/lib/fieldwatch \
    && chown fieldwatch:fieldwatch /var/lib/fieldwatch
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FIELDWATCH_STATE_DIR=/var/lib/fieldwatch \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app
COPY pyproject.toml README.md ./
COPY fieldwatch ./fieldwatch
COPY fwcore ./fwcore
COPY gateway ./gateway
COPY ingest ./ingest
COPY rules ./rules
COPY ticketing ./ticketing
COPY simulators ./simulators
ARG EXTRAS=server
RUN pip install --no-cache-dir ".[${EXTRAS}]"

USER 10001:10001
ENTRYPOINT ["fieldwatch"]
