"""The rig's run state: one enum of states, one of events, one transition table that every command
is checked against, and the exit status every run ends with."""

from __future__ import annotations

import enum


class RunState(enum.Enum):
    """What the rig is doing (the value is what heartbeats say)."""

    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"


class Event(enum.Enum):
    """What can happen to the rig's run: a command of the host (start, stop, measure) or the run's end."""

    START = "start"
    STOP = "stop"
    MEASURE = "measure"
    END = "end"


class ExitStatus(enum.Enum):
    """How a run ended (the value is the wire value of `run_end.exit_status`)."""

    COMPLETED = "completed"
    """The plan ran to its end."""
    STOPPED = "stopped"
    """The host said stop, or the rig was shut down (SIGINT/SIGTERM), at a step boundary."""
    FAILED = "failed"
    """A device or the plan raised, or the rig process died during the run (closed on restart)."""


class StateError(RuntimeError):
    """A command that does not fit the current state."""


TRANSITIONS: dict[tuple[RunState, Event], RunState] = {
    (RunState.IDLE, Event.START): RunState.RUNNING,
    (RunState.RUNNING, Event.STOP): RunState.STOPPING,
    (RunState.RUNNING, Event.MEASURE): RunState.RUNNING,
    (RunState.RUNNING, Event.END): RunState.IDLE,
    (RunState.STOPPING, Event.STOP): RunState.STOPPING,
    (RunState.STOPPING, Event.END): RunState.IDLE,
}


def transition(state: RunState, event: Event | str) -> RunState:
    """The state after `event` (an Event or its value); raises StateError naming the state when the
    event is not allowed there."""
    event = Event(event)
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise StateError(f"cannot {event.value!r} while {state.value}") from None
