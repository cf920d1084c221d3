"""Progress on stderr (rich), so stdout stays clean for `--json` and pipes."""
from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from typing import Callable, TypeVar

T = TypeVar("T")


@functools.lru_cache(maxsize=None)
def console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def info(message: str) -> None:
    console().print(message)


def step(message: str) -> None:
    console().print(f"[bold cyan]→[/] {message}")


def done(message: str) -> None:
    console().print(f"[bold green]✓[/] {message}")


def warn(message: str) -> None:
    console().print(f"[bold yellow]![/] {message}")


@contextmanager
def spinner(message: str):
    """A live spinner with elapsed seconds; `update(text)` changes the detail shown after the message."""
    start = time.monotonic()
    with console().status(message) as status:
        def update(detail: str = "") -> None:
            status.update(f"{message} [dim]({time.monotonic() - start:.0f}s){' ' + detail if detail else ''}[/]")

        yield update


def wait_until(probe: Callable[[], T], *, what: str, timeout: float, interval: float = 5.0,
               describe: Callable[[], str] | None = None) -> T:
    """Call `probe` until it returns something truthy, showing progress; TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    with spinner(f"waiting for {what}") as update:
        while True:
            result = probe()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
            update(describe() if describe else "")
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
