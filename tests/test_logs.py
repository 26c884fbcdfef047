"""Logs: JSON lines off a terminal, bound ticket and outbox ids, levels per logger."""

from __future__ import annotations

import io
import json
import logging

from bot import logs


def test_json_lines_carry_the_bound_ids_and_levels_are_per_logger(restore_logging: None) -> None:
    out = io.StringIO()  # not a terminal: JSON lines
    logs.configure("INFO", stream=out, levels={"bot.outbox": "DEBUG", "tweepy": "DEBUG"})
    with logs.bound(ticket=7, outbox_row=9):
        logging.getLogger("bot.outbox").debug("sending %s", "the ack")
    logging.getLogger("bot.outbox").info("idle")
    logging.getLogger("bot.pipeline").debug("not shown: the root is at INFO")
    logging.getLogger("tweepy").debug("not shown: tweepy never goes below INFO")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["sending the ack", "idle"]
    first, second = lines
    assert (first["level"], first["logger"]) == ("DEBUG", "bot.outbox")
    assert (first["ticket_id"], first["outbox_id"]) == (7, 9)
    assert "ticket_id" not in second  # unbound once the block ended
    assert first["time"].endswith("+00:00")


def test_text_lines_for_a_terminal_show_the_ids_after_the_message(
    restore_logging: None,
) -> None:
    out = io.StringIO()
    logs.configure("INFO", stream=out, json_lines=False)
    with logs.bound(ticket=3):
        try:
            int("boom")
        except ValueError:
            logging.getLogger("bot.outbox").exception("send failed")
    text = out.getvalue()
    first = text.splitlines()[0]
    assert first.endswith("ERROR bot.outbox: send failed [ticket_id=3]")
    assert "ValueError: invalid literal" in text  # the traceback follows the line
