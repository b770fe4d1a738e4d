# One image for every fieldwatch role; the command picks the role.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fieldwatch ./fieldwatch
COPY gateway ./gateway
COPY ingest ./ingest
COPY rules ./rules
COPY ticketing ./ticketing
COPY simulators ./simulators
ARG EXTRAS=server
RUN pip install --no-cache-dir ".[${EXTRAS}]"
ENTRYPOINT ["fieldwatch"]
