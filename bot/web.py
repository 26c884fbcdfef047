"""carebot's own HTTP server (aiohttp, in our loop): ``POST /ingest`` for webhook sources."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Final

from aiohttp import web
from pydantic import SecretStr

from bot.clock import Clock
from bot.platforms.base import MentionSink
from bot.platforms.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadRequest,
    parse_mention,
    verify,
)

logger = logging.getLogger(__name__)

SINK: Final = web.AppKey("sink", MentionSink)


class WebServer:
    """Owns the aiohttp runner; ``start`` binds, ``stop`` unbinds (requests in flight finish)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sink: MentionSink,
        secret: SecretStr,
        clock: Clock,
        max_body: int,
        tolerance: timedelta,
    ) -> None:
        self._host, self._port = host, port
        self._sink = sink
        self._secret = secret
        self._clock = clock
        self._max_body = max_body
        self._tolerance = tolerance
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        """The application (also used by tests through aiohttp's test client)."""
        application = web.Application(client_max_size=self._max_body)
        application.router.add_post("/ingest", self._ingest)
        return application

    async def start(self) -> None:
        """Listen."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
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
