"""carebot's own HTTP server (aiohttp, in our loop).

``GET /healthz`` (alive), ``GET /readyz`` (database reachable, each source's state),
``GET /metrics`` (Prometheus),
``POST /ingest`` for webhook sources, ``POST /telegram`` for Telegram's webhook.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final

from aiohttp import web
from pydantic import SecretStr

from bot.clock import Clock
from bot.metrics import PROMETHEUS_CONTENT_TYPE
from bot.platforms.base import MentionSink
from bot.platforms.telegram_staff import UpdateNotStored
from bot.platforms.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadRequest,
    parse_mention,
    verify,
)

logger = logging.getLogger(__name__)

TELEGRAM_SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 — a header name


class WebServer:
    """Owns the aiohttp runner; ``start`` binds, ``stop`` unbinds (requests in flight finish)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sink: MentionSink,
        secret: SecretStr | None,
        clock: Clock,
        max_body: int,
        tolerance: timedelta,
        telegram: tuple[Callable[[object], Awaitable[None]], SecretStr] | None = None,
        readiness: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]] | None = None,
        metrics: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._sink = sink
        self._secret = secret
        self._clock = clock
        self._max_body = max_body
        self._tolerance = tolerance
        self._telegram = telegram
        self._readiness = readiness
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        """The application (also used by tests through aiohttp's test client)."""
        application = web.Application(client_max_size=self._max_body)
        application.router.add_get("/healthz", self._healthz)
        application.router.add_get("/readyz", self._readyz)
        if self._metrics is not None:
            application.router.add_get("/metrics", self._metrics_page)
        if self._secret is not None:
            application.router.add_post("/ingest", self._ingest)
        if self._telegram is not None:
            application.router.add_post("/telegram", self._telegram_update)
        return application

    async def _healthz(self, request: web.Request) -> web.Response:
        """Alive: the event loop answers."""
        del request
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        """Ready: the database answers (503 if not); each source's state in the body."""
        del request
        if self._readiness is None:
            return web.json_response({"status": "ready"})
        ready, report = await self._readiness()
        return web.json_response(report, status=200 if ready else 503)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        """Prometheus exposition text."""
        del request
        assert self._metrics is not None  # noqa: S101 — the route exists only then
        body = await self._metrics()
        return web.Response(body=body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    async def _telegram_update(self, request: web.Request) -> web.Response:
        assert self._telegram is not None  # noqa: S101 — the route exists only then
        feed, secret = self._telegram
        given = request.headers.get(TELEGRAM_SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
            logger.warning("telegram webhook: refused a request from %s", request.remote)
            return web.json_response({"error": "wrong or missing secret token"}, status=403)
        try:
            await feed(await request.json())  # handled (and stored) before Telegram hears 200
        except (ValueError, UnicodeDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except UpdateNotStored as exc:
            return web.json_response({"error": str(exc)}, status=500)
        return web.json_response({"ok": True})

    async def start(self) -> None:
        """Listen."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = self._runner.addresses[0][1]
        logger.info("HTTP server on %s:%s", self._host, self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _ingest(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self._max_body:
            return _error(413, "body", f"larger than {self._max_body} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "body", f"larger than {self._max_body} bytes")
        assert self._secret is not None  # noqa: S101 — the route exists only then
        refused = verify(
            self._secret.get_secret_value(),
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            body,
            self._clock.now(),
            self._tolerance,
        )
        if refused is not None:
            logger.warning("ingest: refused a request from %s: %s", request.remote, refused)
            return _error(401, "signature", refused)
        try:
            mention = parse_mention(body, self._clock.now())
        except BadRequest as exc:
            return _error(400, exc.field, str(exc))
        await self._sink.submit([mention])  # stored (and decided) before we answer
        return web.json_response({"status": "accepted", "id": mention.external_id}, status=202)


def _error(status: int, field: str, message: str) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)
