# carebot: one process that answers a brand's customers. Build: docker build -t carebot .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CAREBOT_CONFIG_DIR=/app/config

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

# Exec form: Python is PID 1 and receives SIGTERM, so the outbox drains before exit.
CMD ["carebot", "run"]
