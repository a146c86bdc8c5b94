"""pycolmap calls that hold the GIL for seconds, run in a child process.

``pycolmap.poisson_meshing`` and ``pycolmap.simplify_mesh`` keep the interpreter lock for their
whole run (14 s and 6 s on a 36-photo product on 2 cores): run in the app's worker thread, they
would freeze the window that long, and they cannot be cancelled. In a child process the window
stays live and Cancel terminates the child. Both calls read and write PLY files, so nothing but
paths and numbers crosses the process boundary. The child is started with ``spawn`` (no fork
of a process holding Qt and torch threads) and imports only this module and pycolmap.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from engine.progress import Cancelled, CancelToken

#: How often the parent checks the cancel token while the child works (seconds).
POLL_SECONDS = 0.1


def _poisson(src: str, dst: str, depth: int, loglevel: int) -> None:
    import pycolmap

    pycolmap.logging.minloglevel = loglevel
    # one thread: PoissonRecon's OpenMP threads spin-wait, and on two busy cores that made it
    # 5-7x slower than one thread (53 s against 7.5 s at depth 8 on the synthetic box)
    options = pycolmap.PoissonMeshingOptions(depth=depth, trim=0.0, color=False, num_threads=1)
    pycolmap.poisson_meshing(src, dst, options)


def _simplify(src: str, dst: str, ratio: float, loglevel: int) -> None:
    import pycolmap

    pycolmap.logging.minloglevel = loglevel
    options = pycolmap.MeshSimplificationOptions(target_face_ratio=ratio, num_threads=1)
    pycolmap.simplify_mesh(src, dst, options)


_TASKS = {"poisson": _poisson, "simplify": _simplify}


def _child(task: str, args: tuple[Any, ...], conn: Any) -> None:
    try:
        _TASKS[task](*args)
    except BaseException as exc:  # reported to the parent, which raises it as RuntimeError
        conn.send(f"{type(exc).__name__}: {exc}")
    else:
        conn.send("")
    finally:
        conn.close()


def _run(task: str, args: tuple[Any, ...], cancel: CancelToken | None) -> None:
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(task, args, sender), daemon=True)
    proc.start()
    sender.close()
    try:
        while proc.is_alive():
            if cancel is not None and cancel.cancelled:
                proc.terminate()
                proc.join()
                raise Cancelled()
            proc.join(POLL_SECONDS)
        error = receiver.recv() if receiver.poll() else None
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        receiver.close()
    if error is None:
        raise RuntimeError(f"the {task} process stopped unexpectedly (exit code {proc.exitcode})")
    if error:
        raise RuntimeError(error)


def _loglevel() -> int:
    import pycolmap

    return int(pycolmap.logging.minloglevel)


def poisson_meshing(src: Path, dst: Path, depth: int, *, cancel: CancelToken | None = None) -> None:
    """``pycolmap.poisson_meshing`` (no trimming, one thread) in a child process.

    Raises
    ------
    Cancelled
        When ``cancel`` is cancelled while it runs (the child is terminated).
    RuntimeError
        When pycolmap fails or the child dies, with pycolmap's message.
    """
    _run("poisson", (str(src), str(dst), int(depth), _loglevel()), cancel)


def simplify_mesh(src: Path, dst: Path, ratio: float, *, cancel: CancelToken | None = None) -> None:
    """``pycolmap.simplify_mesh`` (quadric collapse to ``ratio`` of the faces) in a child process.

    Raises
    ------
    Cancelled
        When ``cancel`` is cancelled while it runs (the child is terminated).
    RuntimeError
        When pycolmap fails or the child dies, with pycolmap's message.
    """
    _run("simplify", (str(src), str(dst), float(ratio), _loglevel()), cancel)
