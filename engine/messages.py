"""Plain-words messages about many photos: one line for a group, not one per photo.

A photographer reading a log of 48 lines that say the same thing about 48 photos misses the
one line that matters. :func:`grouped` turns ``{photo: reason}`` into one line per kind of
reason; reasons that differ only in their numbers ("only 72 distinctive points", "only 88
distinctive points") are one kind, and the line gives the numbers' range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Photos named in one line; the rest are counted ("and 13 more").
MAX_NAMED = 10

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _fmt(values: list[str]) -> str:
    nums = sorted({float(v) for v in values})
    if len(nums) == 1:
        return values[0]
    lo, hi = (f"{x:g}" for x in (nums[0], nums[-1]))
    return f"{lo} to {hi}"


def named(names: list[str], max_named: int = MAX_NAMED) -> str:
    """``a, b, c and 13 more``: at most ``max_named`` names, the rest counted."""
    more = f" and {len(names) - max_named} more" if len(names) > max_named else ""
    return ", ".join(names[:max_named]) + more


def grouped(reasons: Mapping[str, str], max_named: int = MAX_NAMED) -> list[str]:
    """One line per kind of reason: ``"<photos>: <reason>"``, the largest group first.

    Parameters
    ----------
    reasons
        Photo name -> reason in plain words.
    max_named
        Photos named per line; the others are counted.
    """
    groups: dict[str, list[tuple[str, list[str]]]] = {}
    for name in sorted(reasons):
        reason = reasons[name]
        groups.setdefault(_NUMBER.sub("#", reason), []).append((name, _NUMBER.findall(reason)))
    lines = []
    for key, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        columns = list(zip(*(nums for _, nums in members), strict=True))
        parts = key.split("#")
        text = parts[0] + "".join(
            _fmt(list(col)) + part for col, part in zip(columns, parts[1:], strict=True)
        )
        lines.append(f"{named([n for n, _ in members], max_named)}: {text}")
    return lines
