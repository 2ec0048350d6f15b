"""Crontab expressions as APScheduler triggers, with crontab's meaning of the weekdays.

Used by `controller.settings` (validating ``cycle_cron``) and `controller.composition`
(scheduling backend cycles). Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt

from apscheduler.triggers.cron import CronTrigger

from runtimestate import echo


def trigger(expression: str) -> CronTrigger:
    """A trigger for 5 crontab fields, or 6 with seconds first. Raises ValueError.

    Weekdays mean what they mean in crontab (0 and 7 are Sunday, 1 is Monday), not what
    APScheduler 3 makes of numbers (0 is Monday).
    """
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError(
            f"a cron expression has 5 or 6 fields, not {len(fields)}: {echo.quoted(expression)}"
        )
    second, minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(
            second=second, minute=minute, hour=hour, day=day, month=month,
            day_of_week=crontab_weekdays(weekday), timezone=dt.UTC,
        )  # fmt: skip
    except ValueError as exc:
        raise ValueError(
            f"invalid cron expression {echo.quoted(expression)}: {echo.plain(str(exc))}"
        ) from exc


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field (``1-5``, ``0,6``, ``*/2``, ``mon-fri``) as APScheduler day
    names. Raises ValueError."""
    days: set[int] = set()
    for item in field.lower().split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        else:
            start, _, end = span.partition("-")
            first = _weekday(start)
            last = _weekday(end) if end else (6 if step_text else first)
            if end == "sun":  # as in mon-sun: the end of the week
                last = 7
        if step < 1 or first > last:
            raise ValueError(f"invalid day of week {echo.quoted(item)}")
        days |= {day % 7 for day in range(first, last + 1, step)}
    if len(days) == 7:
        return "*"
    return ",".join(_DAYS[day] for day in sorted(days))


def _weekday(text: str) -> int:
    if text in _DAYS:
        return _DAYS.index(text)
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"invalid day of week {echo.quoted(text)}")
