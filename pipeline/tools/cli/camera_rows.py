"""How ``frameflow cameras`` and ``frameflow top`` show a camera: one row of its state as the camera
process writes it to Redis (:mod:`pipeline.cameras.state`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The cameras table's columns.
CAMERA_COLUMNS = ("camera", "state", "last frame", "fps in", "fps out", "skipped", "reconnects", "last gap", "url")


def camera_row(
    state: dict[str, Any], *, age: Callable[[float | None], str], text: Callable[[object], str]
) -> list[str]:
    """The cells of one camera's row; ``age`` formats seconds, ``text`` makes a value safe to print."""
    if state.get("gone"):
        return [text(state["camera_id"]), "[red]gone[/]", *["-"] * (len(CAMERA_COLUMNS) - 2)]
    if state.get("connected"):
        condition = "[green]connected[/]"
    elif not state.get("frames_in") and not state.get("last_error"):
        condition = "connecting"
    else:
        condition = f"[yellow]reconnecting {age(state.get('down_for_s'))}[/]"
        if state.get("last_error"):
            condition += f" ({text(state['last_error'])})"
    skipped = state.get("skipped") or {}
    return [
        text(state["camera_id"]),
        condition,
        age(state.get("last_frame_age_s")),
        f"{state.get('fps_in', 0):.1f}",
        f"{state.get('fps_out', 0):.1f}",
        ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) or "0",
        str(state.get("reconnects", 0)),
        f"{state.get('last_gap_s', 0):.1f}s" if state.get("last_gap_s") else "-",
        text(state.get("url", "")),
    ]
