"""Deterministic names for run Pods.

Two replicas that both believe they own a run (a lease taken over after a pause, a run-now seen
twice) must create one Pod, not two: the Pod name is a pure function of the task's uid, its
scheduled time, what triggered it and the attempt number, so the second create gets 409
AlreadyExists and adopts the first Pod. The name stays readable (task name and Unix time of the
schedule) and within 63 characters, a DNS-1123 label, so it is usable as a label value and a
hostname too.
"""

from __future__ import annotations

import datetime
import hashlib
import re

MAX_NAME = 63
_HASH_LEN = 5
_INVALID = re.compile(r"[^a-z0-9-]+")


def _label_safe(name: str, limit: int) -> str:
    """``name`` lower-cased with anything but [a-z0-9-] turned into ``-``, cut to ``limit``."""
    cleaned = _INVALID.sub("-", name.lower())[:limit].strip("-")
    return cleaned or "task"


def run_pod_name(
    *, task_name: str, task_uid: str, scheduled_at: datetime.datetime, trigger: str = "", attempt: int = 0
) -> str:
    """``<task>-<unix seconds>-<hash>`` for scheduled runs, ``<task>-now-<hash>`` for run-now.

    ``trigger`` is "" for scheduled runs or the run-now annotation value; ``attempt`` counts the
    retries of the same scheduled time after failed Pods. The hash covers every input, so the name
    changes with any of them even where the readable part is cut short.
    """
    stamp = scheduled_at.astimezone(datetime.UTC).replace(microsecond=0).isoformat()
    digest = hashlib.sha256(f"{task_uid}|{stamp}|{trigger}|{attempt}".encode()).hexdigest()[:_HASH_LEN]
    middle = "now" if trigger else str(int(scheduled_at.timestamp()))
    prefix = _label_safe(task_name, MAX_NAME - len(middle) - _HASH_LEN - 2)
    return f"{prefix}-{middle}-{digest}"


def label_value(value: str) -> str:
    """A label value (<= 63 characters, alphanumeric at both ends) identifying ``value``.

    Task names up to 63 characters are used as they are; longer ones are cut and suffixed with a
    hash so that two long names sharing a prefix still select different Pods.
    """
    if len(value) <= MAX_NAME:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{value[: MAX_NAME - 9].rstrip('-._')}-{digest}"
