"""Helpers for the policy suites: the corpus loader, JSON Patch, and a loop
thread that lets synchronous (Hypothesis) tests drive the async engines."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gateway.policy.engine import Decision

CORPUS = Path(__file__).parent / "corpus"
T = TypeVar("T")


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    input: Any
    expect: dict[str, Any]


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 add / replace / remove: all the corpus needs."""
    doc = copy.deepcopy(doc)
    for op in ops:
        tokens = [_unescape(t) for t in op["path"].split("/")[1:]]
        parent = doc
        for t in tokens[:-1]:
            parent = parent[int(t)] if isinstance(parent, list) else parent[t]
        last = tokens[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                parent.insert(int(last), op["value"]) if op["op"] == "add" else None
                if op["op"] == "replace":
                    parent[int(last)] = op["value"]
            else:
                if op["op"] == "replace" and last not in parent:
                    raise KeyError(op["path"])
                parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[last]
        else:
            raise ValueError(op["op"])
    return doc


def base_input() -> dict[str, Any]:
    data = yaml.safe_load((CORPUS / "base.yaml").read_text(encoding="utf-8"))
    return dict(data["base"])


def load_corpus() -> list[Case]:
    base = base_input()
    cases: list[Case] = []
    for path in sorted(CORPUS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for raw in data.get("cases", []):
            doc = raw["input"] if "input" in raw else apply_patch(base, raw["patch"])
            cases.append(Case(raw["name"], path.name, doc, raw["expect"]))
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "corpus case names must be unique"
    return cases


def normalise(decision: Decision) -> dict[str, Any]:
    """Representation only: the JSON form (deny already sorted), no engine name."""
    return decision.to_json()


class LoopThread:
    """An event loop on its own thread, so sync tests can await engine calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
