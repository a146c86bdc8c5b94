"""Exports of a run: ``dense.ply``, ``viewer.html``, ``report.json`` (pure data -> files).

Every file is written atomically and carries no EXIF, no local absolute paths and nothing
fetched from the network.
"""

from engine.export._atomic import atomic_open, write_bytes_atomic
from engine.export.plotly_html import decimate, write_viewer
from engine.export.ply import PlyError, read_ply, write_ply
from engine.export.report import scrub_paths, to_jsonable, write_json_atomic, write_report

__all__ = [
    "PlyError",
    "atomic_open",
    "decimate",
    "read_ply",
    "scrub_paths",
    "to_jsonable",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_ply",
    "write_report",
    "write_viewer",
]
