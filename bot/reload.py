"""Hot reload: a changed config directory is validated, then swapped in whole, or refused.

The watcher looks at the config directory's files (``*.yaml`` and model ``*.json``) every
``interval`` and loads a change once the files stayed unchanged for one look; SIGHUP loads
at once. A change is loaded exactly as at start-up (every file,
every cross-check). Valid: the rules, model, templates, escalation policies, screening
lists, brand name, reopen window and ack cap take effect for the next mention; tickets keep
the policy snapshot they were opened with. Invalid: refused, the running config stays,
and the error (file, line, key) is logged and posted to ``staff.alerts_group``. Changes to
the rest of ``carebot.yaml`` (platforms, database, staff groups...) are logged as needing a
restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from bot.config import Config, load_config
from bot.errors import ConfigError

logger = logging.getLogger(__name__)

# carebot.yaml sections a reload applies; any other change waits for a restart
HOT_SECTIONS: Final = frozenset({"brand", "screening"})
HOT_KEYS: Final = {"tickets": frozenset({"reopen_window"})}

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(directory: Path) -> Fingerprint:
    """Name, modification time and size of every config file (blocking: run in a thread)."""
    found = []
    for path in sorted(directory.iterdir()):
        if path.suffix in {".yaml", ".yml", ".json"} and path.is_file():
            stat = path.stat()
            found.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(found)


def needing_restart(old: Config, new: Config) -> list[str]:
    """The ``carebot.yaml`` keys that changed but only take effect at the next start."""
    before: dict[str, Any] = old.carebot.model_dump()
    after: dict[str, Any] = new.carebot.model_dump()
    changed = []
    for section in sorted(set(before) | set(after)):
        if section in HOT_SECTIONS or before.get(section) == after.get(section):
            continue
        hot = HOT_KEYS.get(section, frozenset())
        a, b = before.get(section) or {}, after.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if key not in hot and a.get(key) != b.get(key):
                changed.append(f"{section}.{key}")
    return changed


class ConfigReloader:
    """Watches the config directory and applies valid changes (see the module docstring)."""

    def __init__(
        self,
        current: Config,
        environ: Mapping[str, str],
        apply: Callable[[Config], None],
        *,
        alert: Callable[[str], Awaitable[None]] | None = None,
        interval: timedelta = timedelta(seconds=2),
        mask: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.current = current
        self._environ = environ
        self._apply = apply
        self._alert = alert
        self._interval = interval
        self._mask = mask  # the alert leaves the process: no secret in it
        self.on_result: Callable[[bool], None] = lambda applied: None
        self._asked = asyncio.Event()
        self._seen: Fingerprint | None = None
        self.reloads = 0
        self.refusals = 0

    def trigger(self) -> None:
        """Look now (SIGHUP), whether or not the files seem changed."""
        self._asked.set()

    async def run(self) -> None:
        """Watch until cancelled."""
        directory = self.current.directory
        self._seen = await asyncio.to_thread(fingerprint, directory)
        settling: Fingerprint | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._asked.wait(), self._interval.total_seconds())
            forced = self._asked.is_set()
            self._asked.clear()
            try:
                now = await asyncio.to_thread(fingerprint, directory)
            except OSError as exc:
                logger.warning("config reload: cannot read %s: %s", directory, exc)
                continue
            if not forced and (now == self._seen or now != settling):
                # a change is read once the files stayed the same for one look: an editor
                # or a deploy still writing them must not get half a config applied
                settling = None if now == self._seen else now
                continue
            self._seen, settling = now, None  # a refused change is not retried until edited
            await self.reload()

    async def reload(self) -> bool:
        """Load the directory again; apply it if valid. True when applied."""
        directory = self.current.directory
        try:
            new = await asyncio.to_thread(load_config, directory, self._environ)
        except ConfigError as exc:
            self.refusals += 1
            self.on_result(False)
            logger.error("config reload refused; the running config stays:\n%s", exc)
            await self._tell(f"⚠️ Config change refused; the running config stays.\n{exc}")
            return False
        except Exception as exc:  # a file vanished mid-read, say: same as invalid
            self.refusals += 1
            self.on_result(False)
            logger.exception("config reload failed; the running config stays")
            await self._tell(f"⚠️ Config change could not be loaded ({type(exc).__name__}).")
            return False
        later = needing_restart(self.current, new)
        self._apply(new)
        self.current = new
        self.reloads += 1
        self.on_result(True)
        logger.info("config reloaded from %s", directory)
        if later:
            logger.warning(
                "config reload: these changes take effect at the next restart: %s",
                ", ".join(later),
            )
        return True

    async def _tell(self, text: str) -> None:
        if self._alert is None:
            return
        try:
            await self._alert(f"<pre>{html.escape(self._mask(text)[:3500])}</pre>")
        except Exception:
            logger.exception("config reload: could not post the alert to the staff chat")
