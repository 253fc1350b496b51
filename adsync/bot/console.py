"""`adsync chat`: the bot's commands in a terminal, answers rendered as text.

The same grammar, access rules (as the console user) and actions as in Feishu; cards are shown
through ``cards.to_text``. Reads lines from stdin until EOF or `quit`, so it can be scripted:
``printf 'help\\nsync yesterday\\n' | adsync chat``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from adsync.bot import cards
from adsync.bot.actions import Actions, Caller
from adsync.bot.commands import CommandError, parse

PROMPT = "adsync> "


class Console:
    def __init__(self, actions: Actions, out: TextIO | None = None) -> None:
        self.actions = actions
        self.out = out or sys.stdout
        # The console user runs everything: whoever has the shell has the database already.
        self.caller = Caller(
            user_id="console", chat_id="console", chat_type="p2p", may_change=True, local=True
        )

    def answer(self, line: str) -> str:
        """One line in, the rendered answer out."""
        try:
            command = parse(line, self.actions.today())
        except CommandError as exc:
            return str(exc)
        if self.actions.is_long(command):
            self.out.write(cards.to_text(self.actions.working(command)) + "\n")
            self.out.flush()
        return cards.to_text(self.actions.execute(command, self.caller, trigger="console"))

    def run(self, lines: Iterable[str], interactive: bool) -> int:
        if interactive:
            self.out.write("adsync chat — type `help`, `quit` to leave.\n")
        source = iter(lines)
        while True:
            if interactive:
                self.out.write(PROMPT)
                self.out.flush()
            line = next(source, None)
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            if line.lower() in ("quit", "exit", "退出"):
                break
            if not interactive:  # a transcript: show what was asked
                self.out.write(f"{PROMPT}{line}\n")
            self.out.write(self.answer(line) + "\n\n")
            self.out.flush()
        return 0
