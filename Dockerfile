# carebot: one process that answers a brand's customers. Build: docker build -t carebot .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CAREBOT_CONFIG_DIR=/app/config \
    CAREBOT_HTTP_HOST=0.0.0.0 \
    CAREBOT_HTTP_PORT=8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY migrations ./migrations
RUN pip install --no-cache-dir .
COPY config ./config

# Run as an unprivileged user; the embedded SQLite database lives in /data (mount a volume).
RUN useradd --create-home --uid 10001 carebot && mkdir /data && chown carebot:carebot /data
USER carebot
WORKDIR /data

# /healthz: alive; /readyz (for an orchestrator's readiness probe): database and sources.
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

# Exec form: Python is PID 1 and receives SIGTERM, so the outbox drains before exit.
CMD ["carebot", "run"]
