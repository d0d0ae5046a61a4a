"""Speculative streaming: a tier's worker draft reaches the client at once, before it is verified.

A tier streams only its final answer by default (:class:`~podium.server.stream.AnswerGate`: drafts
are held until the verifier accepts one), so the client's first token waits for the worker *and*
the verifier. With ``speculative: true`` on the tier, :class:`SpeculativeGate` sends each worker
turn's text as the worker writes it; the verifier's check then runs while the client is already
reading the draft. When the verifier asks for a revision, the next worker turn streams after the
marker :data:`REVISED` (a line ``[revised]`` between blank lines): everything after the last
marker replaces what came before it. If the run ends on an answer other than the last text sent
(a revision that failed, a budget that ran out), that answer follows one more marker.

The trace is the run's as always: every worker turn (the draft and each revision) and every
verdict; ``result.workflow["speculative"]`` adds how many markers the client saw.
Thinker plans, verdicts and coordinator calls never reach the client. Workflow tiers (conductor,
topologies) keep the held stream.
"""

from __future__ import annotations

from ..events import Event, RunFinished, TurnDelta, TurnStarted
from ..types import Role, RunResult

REVISED = "\n\n[revised]\n\n"

Item = tuple[str, str]  # ("text", piece) for the client, or ("comment", line): stream.py's items


def _pieces(text: str, size: int = 16) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class SpeculativeGate:
    """The answer gate of a speculative tier (see the module doc): :meth:`on_event` returns what to send."""

    def __init__(self, comments: bool = True) -> None:
        self.comments = comments
        self.segments: list[str] = []  # the text sent of each worker turn, in order
        self.turn: int | None = None  # the worker turn now streaming
        self.markers = 0

    def _marker(self) -> list[Item]:
        self.markers += 1
        return [("text", REVISED)]

    def on_event(self, event: Event) -> list[Item]:
        if isinstance(event, TurnStarted):
            if event.role == Role.WORKER:
                self.turn = event.turn
                self.segments.append("")
            return [("comment", f"podium turn {event.turn} {event.role.value} {event.model}")] if self.comments else []
        if isinstance(event, TurnDelta) and event.role == Role.WORKER and event.turn == self.turn and event.text:
            out: list[Item] = []
            if self.segments[-1] == "" and any(self.segments[:-1]):
                out += self._marker()
            self.segments[-1] += event.text
            return [*out, ("text", event.text)]
        if isinstance(event, RunFinished):
            return self.release(event.result)
        return []

    def release(self, result: RunResult) -> list[Item]:
        """The final answer if the client's last text is not it (after a marker when text was sent)."""
        answer = result.answer or ""
        sent = [s for s in self.segments if s]
        out: list[Item] = []
        if answer and not (sent and sent[-1] == answer):
            out = [*(self._marker() if sent else []), *(("text", p) for p in _pieces(answer))]
        result.workflow = {**(result.workflow or {}), "speculative": {"markers_sent": self.markers}}
        return out
