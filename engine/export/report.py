"""``report.json`` and other JSON files of a run folder: atomic, plain JSON, no local paths."""

from __future__ import annotations

import dataclasses
import json
import math
import ntpath
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from engine.export._atomic import atomic_open
from engine.types import RunReport

# Absolute paths inside longer text: POSIX "/a/b..." (two or more parts, no spaces) or
# Windows "C:\a\b". Whole-string paths may contain spaces; see _scrub_string.
_EMBEDDED_POSIX = re.compile(r"(?<![\w.:/~-])/(?:[\w.@+~-]+/)+[\w.@+~-]+")
_EMBEDDED_WINDOWS = re.compile(r"\b[A-Za-z]:\\(?:[\w.@+~ -]+\\)*[\w.@+~-]+")


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types.

    Dataclasses become dicts, paths strings, numpy scalars and arrays Python numbers and
    lists, tuples and sets lists; non-finite floats become None (JSON has no NaN).

    Parameters
    ----------
    obj
        Any nesting of the above.

    Returns
    -------
    Any
        The same data as dicts, lists, str, int, float, bool and None.

    Raises
    ------
    TypeError
        For a value of another type.
    """
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return to_jsonable(float(obj))
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return sorted((to_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def scrub_paths(obj: Any, roots: Sequence[str | os.PathLike[str]] = ()) -> Any:
    """Remove local absolute paths from strings anywhere in ``obj`` (keys included).

    A string that is an absolute path under one of ``roots`` becomes its relative POSIX form
    (``"."`` for the root itself); any other absolute path becomes its base name. Paths inside
    longer text (warnings, errors) are treated the same way.

    Parameters
    ----------
    obj
        Plain JSON-like data (dicts, lists, tuples, strings, numbers); :class:`pathlib.Path`
        values are scrubbed too and returned as strings.
    roots
        Folders whose descendants keep their relative path (the run folder, the input folder).

    Returns
    -------
    Any
        A scrubbed copy; tuples come back as lists.
    """
    root_strs = sorted(
        {_norm_root(r) for r in roots if os.path.isabs(os.fspath(r))}, key=len, reverse=True
    )
    return _scrub(obj, root_strs)


def _norm_root(root: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(root)))


def _scrub(obj: Any, roots: list[str]) -> Any:
    if isinstance(obj, PurePath):
        obj = str(obj)
    if isinstance(obj, str):
        return _scrub_string(obj, roots)
    if isinstance(obj, Mapping):
        return {_scrub(k, roots): _scrub(v, roots) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v, roots) for v in obj]
    return obj


def _is_abs(text: str) -> bool:
    return posixpath.isabs(text) or (ntpath.isabs(text) and ntpath.splitdrive(text)[0] != "")


def _scrub_string(text: str, roots: list[str]) -> str:
    if "\n" not in text and _is_abs(text):
        return _relative_or_name(text, roots)
    for root in roots:
        # Embedded occurrences of a root (which may contain spaces) go first.
        pattern = re.escape(root) + r"(" + re.escape(os.sep) + r"|(?![\w.@+~-]))"
        text = re.sub(pattern, lambda m: "" if m.group(1) else ".", text)
    text = _EMBEDDED_POSIX.sub(lambda m: _relative_or_name(m.group(0), roots), text)
    return _EMBEDDED_WINDOWS.sub(lambda m: _relative_or_name(m.group(0), roots), text)


def _relative_or_name(path: str, roots: list[str]) -> str:
    norm = os.path.normpath(path)
    for root in roots:
        if norm == root:
            return "."
        if norm.startswith(root.rstrip(os.sep) + os.sep):
            return Path(os.path.relpath(norm, root)).as_posix()
    name = ntpath.basename(path) if "\\" in path else posixpath.basename(path.rstrip("/"))
    return name


def write_json_atomic(
    path: str | os.PathLike[str], data: Any, roots: Sequence[str | os.PathLike[str]] | None = None
) -> Path:
    """Write ``data`` as indented UTF-8 JSON, atomically, without local absolute paths.

    Parameters
    ----------
    path
        Output file.
    data
        Anything :func:`to_jsonable` accepts.
    roots
        Folders whose descendants are written as relative paths (see :func:`scrub_paths`);
        default: the folder of ``path``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        When the file cannot be written.
    """
    path = Path(path)
    if roots is None:
        roots = (path.parent.resolve(),)
    clean = scrub_paths(to_jsonable(data), roots)
    text = json.dumps(clean, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return path


def write_report(
    path: str | os.PathLike[str], report: RunReport, roots: Sequence[str | os.PathLike[str]] = ()
) -> Path:
    """Write a :class:`~engine.types.RunReport` as ``report.json``.

    Parameters
    ----------
    path
        Output file (usually ``OUT/report.json``).
    report
        The run's report.
    roots
        Folders whose descendants are written as relative paths (the run folder is always
        one); any other absolute path is reduced to its base name.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        When the file cannot be written.
    """
    path = Path(path)
    all_roots = [path.parent.resolve(), *roots]
    return write_json_atomic(path, dataclasses.asdict(report), roots=all_roots)
