"""The rig's run state: one enum and one transition table that every command is checked against."""

from __future__ import annotations

import enum


class RunState(enum.Enum):
    """What the rig is doing."""

    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"


class StateError(RuntimeError):
    """A command that does not fit the current state."""


TRANSITIONS: dict[tuple[RunState, str], RunState] = {
    (RunState.IDLE, "start"): RunState.RUNNING,
    (RunState.RUNNING, "stop"): RunState.STOPPING,
    (RunState.RUNNING, "measure"): RunState.RUNNING,
    (RunState.RUNNING, "end"): RunState.IDLE,
    (RunState.STOPPING, "stop"): RunState.STOPPING,
    (RunState.STOPPING, "end"): RunState.IDLE,
}


def transition(state: RunState, event: str) -> RunState:
    """The state after `event`; raises StateError naming the state when the event is not allowed."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise StateError(f"cannot {event!r} while {state.value}") from None
