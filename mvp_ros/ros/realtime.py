"""Real-time scheduling of the thread that runs a node's control ticks, as ros2_control's
`thread_priority`: under SCHED_FIFO the tick preempts the computer's ordinary (SCHED_OTHER) work the
moment its observations arrive, instead of waiting for a time slice behind it. Linux only.
"""
from __future__ import annotations

import os

MAX_PRIORITY = 99
HOW_TO_ALLOW = ("the process needs CAP_SYS_NICE, or an rtprio limit at least that high "
                "(e.g. '@realtime - rtprio 98' in /etc/security/limits.conf, with the user in group realtime)")


def check_priority(priority: int) -> None:
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"thread_priority must be 0 (the normal scheduler) or a SCHED_FIFO priority 1-{MAX_PRIORITY}, "
                         f"got {priority}")


Scheduling = tuple[int, os.sched_param]  # (policy, parameters) of a thread


def raise_thread_priority(priority: int) -> Scheduling:
    """The calling thread under SCHED_FIFO at `priority` (1-99); returns how it was scheduled before.
    PermissionError, saying what to allow, when the system refuses."""
    check_priority(priority)
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError as error:
        raise PermissionError(f"SCHED_FIFO priority {priority} was refused ({error.strerror}): {HOW_TO_ALLOW}") from None
    return before


def restore_scheduling(before: Scheduling) -> None:
    os.sched_setscheduler(0, *before)


def scheduling() -> str:
    """How the calling thread is scheduled: 'SCHED_FIFO 50', 'SCHED_OTHER', ..."""
    policy = os.sched_getscheduler(0)
    name = {os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR", os.SCHED_OTHER: "SCHED_OTHER"}.get(policy, str(policy))
    priority = os.sched_getparam(0).sched_priority
    return f"{name} {priority}" if priority else name
