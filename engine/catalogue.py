"""A catalogue: many products, each reconstructed into its own run folder, and a gallery.

``run_catalogue(CATALOGUE, SITE, config)`` finds the products (a product is a folder that
directly holds photos; folders may nest), reads the optional ``catalogue.csv`` (folder, name,
SKU, a known dimension, marker size), and runs :func:`engine.pipeline.reconstruct` for each one
into ``SITE/products/<slug>/``, the same run folder as the ``reconstruct`` command. Products run
on this machine, each in its own worker process, or as Ray tasks on a cluster. ``SITE/summary.json``
says how each product went (rewritten atomically after every product, so it is never half
written) and ``SITE/index.html`` is the static gallery (:mod:`engine.export.gallery`).

Rules:

- A product whose run folder already holds a finished run of the same photos and settings is
  not computed again (:func:`engine.run_folder.up_to_date`); one that failed on bad
  input or an impossible reconstruction (exit code 2 or 3) with unchanged photos and settings
  is not retried unless asked (``retry_failed``). Anything else runs again, and the pipeline
  resumes it from its last finished stage.
- A failed product (any :class:`engine.errors.VitrineError`) is recorded with its reason and
  exit code; the others go on. A worker that dies (killed, out of memory) is retried once
  (``WORKER_RETRIES``), then recorded as failed.
- Cancelling (the CLI's Ctrl-C) stops starting products, asks the running ones to stop at their
  next check and waits for them; finished stages are kept, so a rerun continues.
"""

from __future__ import annotations

import atexit
import csv
import dataclasses
import hashlib
import json
import logging
import os
import re
import signal
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import engine
from engine import run_folder
from engine.config import PipelineConfig, parse_known_dimension
from engine.errors import ClusterUnavailableError, InputError, OutputError, VitrineError
from engine.export.report import write_json_atomic
from engine.io import IMAGE_EXTENSIONS, RAW_EXTENSIONS
from engine.options import RunOptions, pipeline_config
from engine.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from engine.stages.ingest import IGNORED_NAMES, MASKS_FOLDER, is_mask_file

logger = logging.getLogger(__name__)

#: What a product folder must directly hold: the photo formats ingest reads.
PHOTO_EXTENSIONS = IMAGE_EXTENSIONS | RAW_EXTENSIONS
CSV_NAME = "catalogue.csv"
SUMMARY_NAME = "summary.json"
PRODUCTS = "products"
#: A worker process (or Ray worker) that dies is started again this many times.
WORKER_RETRIES = 1
#: Exit codes of failures that the same photos and settings would give again.
DETERMINISTIC_EXIT_CODES = (InputError.exit_code, 3)
#: Seconds a cancelled worker gets to stop at its next check before it is killed.
CANCEL_GRACE_S = 60.0
#: Exit code recorded for a product whose worker died on every try.
WORKER_LOST_EXIT_CODE = 1

WorkerHook = Callable[[str, ProgressEvent], None]
"""Called in the worker with (slug, event) for every progress event of a product's run. For
tests that simulate a crash (a module-level function, so that it can be pickled); None in use."""


# --------------------------------------------------------------- products


@dataclasses.dataclass(frozen=True)
class Product:
    """One product of a catalogue.

    Attributes
    ----------
    folder
        Its folder relative to the catalogue, with ``/`` (``.`` for the catalogue itself).
    slug
        Its name under ``SITE/products/``: unique, stable (from the folder), URL-safe.
    photos
        The photos it directly holds, in name order.
    name, sku
        From catalogue.csv; the name defaults to the folder's name.
    known_dimension, known_dimension_mm, marker_size_mm
        True-scale hints from catalogue.csv (see :class:`engine.config.ScaleConfig`).
    problem
        Why it cannot run at all (a catalogue.csv row naming a missing folder); empty if none.
    config
        See below.
    """

    folder: str
    slug: str
    photos: tuple[Path, ...]
    name: str
    sku: str = ""
    known_dimension: str = ""
    known_dimension_mm: float = 0.0
    marker_size_mm: float = 0.0
    problem: str = ""
    config: PipelineConfig | None = None
    """Settings of its own (an image set of the app's project); None: the batch's settings with
    this product's name and true-scale hints."""


def is_photo(path: Path) -> bool:
    """Whether ``path`` is a photo ingest would read (by extension; masks and hidden left out)."""
    name = path.name
    return (
        path.suffix.lower() in PHOTO_EXTENSIONS
        and not name.startswith(".")
        and name.lower() not in IGNORED_NAMES
        and not is_mask_file(path)
        and path.is_file()
    )


def slugify(folder: str) -> str:
    """A URL-safe name from a relative folder: ``Shoes/Red Sneaker`` -> ``shoes-red-sneaker``."""
    text = unicodedata.normalize("NFKD", folder).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:60].strip("-") or "product"


def _unique_slugs(folders: Sequence[str]) -> dict[str, str]:
    """Folder -> slug, unique.

    Folders whose slugs collide get a suffix from their own path's hash, so a slug never
    changes when other products come or go.
    """
    base = {f: slugify(f) for f in folders}
    taken: dict[str, int] = {}
    for slug in base.values():
        taken[slug] = taken.get(slug, 0) + 1
    out = {}
    for folder, slug in base.items():
        if taken[slug] > 1:
            slug = f"{slug}-{hashlib.sha1(folder.encode('utf-8')).hexdigest()[:6]}"
        out[folder] = slug
    return out


def read_catalogue_csv(path: Path) -> dict[str, dict[str, Any]]:
    """catalogue.csv -> {folder: {name, sku, known_dimension, known_dimension_mm, marker_size_mm}}.

    Columns (header row, any case, spaces or underscores): ``folder`` (required), ``name``,
    ``sku``, ``known dimension`` (``height=250``, as ``reconstruct --known-dimension``) and
    ``marker size mm`` (as ``reconstruct --marker-size-mm``).

    Raises
    ------
    InputError
        When the file cannot be read, has no ``folder`` column, or a value is not valid.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read {path}: {exc}. Save it as UTF-8 CSV.") from exc
    reader = csv.DictReader(text.splitlines())
    norm = {h: re.sub(r"[\s_\-]+", " ", (h or "").strip().lower()) for h in reader.fieldnames or []}
    aliases = {
        "folder": "folder",
        "name": "name",
        "product name": "name",
        "product": "name",
        "sku": "sku",
        "known dimension": "known_dimension",
        "dimension": "known_dimension",
        "marker size": "marker_size_mm",
        "marker size mm": "marker_size_mm",
        "marker mm": "marker_size_mm",
    }
    columns = {h: aliases[n] for h, n in norm.items() if n in aliases}
    if "folder" not in columns.values():
        raise InputError(
            f"{path} has no 'folder' column: its first row must name the columns, for example "
            "folder,name,sku,known dimension,marker size mm"
        )
    rows: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(reader, start=2):
        values = {columns[h]: (v or "").strip() for h, v in row.items() if h in columns}
        folder = values.get("folder", "").strip().strip("/").replace("\\", "/")
        if not folder:
            continue
        entry: dict[str, Any] = {"name": values.get("name", ""), "sku": values.get("sku", "")}
        try:
            if values.get("known_dimension"):
                which, mm = parse_known_dimension(values["known_dimension"])
                entry.update(known_dimension=which, known_dimension_mm=mm)
            if values.get("marker_size_mm"):
                marker = float(values["marker_size_mm"].lower().removesuffix("mm"))
                if not marker > 0:
                    raise ValueError(f"marker size {values['marker_size_mm']!r} is not > 0")
                entry["marker_size_mm"] = marker
        except ValueError as exc:
            raise InputError(f"{path}, line {line} ({folder}): {exc}.") from exc
        rows[os.path.normpath(folder).replace(os.sep, "/")] = entry
    return rows


def find_products(catalogue: Path, *, exclude: Sequence[Path] = ()) -> list[Product]:
    """The products of a catalogue folder, in folder order.

    Parameters
    ----------
    catalogue
        The catalogue folder.
    exclude
        Folders not to look into (the site, when it lies inside the catalogue).

    Raises
    ------
    InputError
        When the folder does not exist, holds no photos, or catalogue.csv is unusable.
    """
    root = Path(catalogue)
    if not root.is_dir():
        raise InputError(f"'{catalogue}' is not a folder: give the folder of product folders.")
    skip = {Path(os.path.abspath(p)) for p in exclude}
    found: dict[str, tuple[Path, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d.lower() != MASKS_FOLDER
            and Path(os.path.abspath(folder / d)) not in skip
        )
        photos = tuple(folder / f for f in sorted(filenames) if is_photo(folder / f))
        if photos:
            found[folder.relative_to(root).as_posix()] = photos
    rows = read_catalogue_csv(root / CSV_NAME) if (root / CSV_NAME).is_file() else {}
    folders = sorted(set(found) | set(rows))
    if not folders:
        raise InputError(
            f"No photos found in '{catalogue}': put each product's photos in a folder of its "
            "own inside it."
        )
    slugs = _unique_slugs(folders)
    products = []
    for folder in folders:
        row = rows.get(folder, {})
        default_name = Path(folder).name if folder != "." else root.resolve().name
        problem = ""
        if folder not in found:
            problem = (
                f"{CSV_NAME} names the folder '{folder}', which holds no photos in "
                f"'{catalogue}': check the folder name in {CSV_NAME}."
            )
        products.append(
            Product(
                folder=folder,
                slug=slugs[folder],
                photos=found.get(folder, ()),
                name=row.get("name") or default_name.replace("_", " "),
                sku=row.get("sku", ""),
                known_dimension=row.get("known_dimension", ""),
                known_dimension_mm=float(row.get("known_dimension_mm", 0.0)),
                marker_size_mm=float(row.get("marker_size_mm", 0.0)),
                problem=problem,
            )
        )
    return products


def product_config(base: PipelineConfig, product: Product) -> PipelineConfig:
    """The batch's settings with this product's name and true-scale hints.

    A product with settings of its own keeps them (only its name is filled in when empty).
    """
    if product.config is not None:
        own = product.config
        if own.export.product_name:
            return own
        return own.replace(export=dataclasses.replace(own.export, product_name=product.name))
    scale: dict[str, Any] = {}
    if product.marker_size_mm > 0:
        scale["marker_size_mm"] = product.marker_size_mm
    if product.known_dimension and product.known_dimension_mm > 0:
        scale["known_dimension"] = product.known_dimension
        scale["known_dimension_mm"] = product.known_dimension_mm
    return pipeline_config(RunOptions(product_name=product.name, scale=scale), base)


# --------------------------------------------------------------- resources


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one product's run needs: Ray's resource request, and the local pool's sizing."""

    num_cpus: int
    memory_mb: int
    num_gpus: float = 0.0


def product_resources(config: PipelineConfig, n_photos: int) -> Resources:
    """CPUs, memory and GPUs one product's run asks for.

    CPUs: 1 for the sparse-only preview, 2 for a dense run (SIFT, the depth sweep and Poisson
    each use a couple of threads well), 4 for ``high``. Memory: about 1.2 GB of interpreter,
    torch and pycolmap, plus per photo its decoded working copy and the depth sweep's buffers
    (about 60 bytes per working-copy pixel, measured with standard settings), at least 2 GB for
    a dense run. A GPU only when the settings ask for CUDA.
    """
    side = max(config.ingest.max_image_size, 1)
    pixels = side * side * 3 // 4  # 4:3 photos at the working size
    if config.stop_after == "sparse":
        cpus, floor_mb, per_pixel = 1, 1024, 12
    else:
        cpus, floor_mb, per_pixel = (4 if config.preset == "high" else 2), 2048, 60
    memory = 1200 + n_photos * pixels * per_pixel // 2**20
    gpus = 1.0 if config.device == "cuda" else 0.0
    return Resources(num_cpus=cpus, memory_mb=int(max(floor_mb, memory)), num_gpus=gpus)


def available_memory_mb() -> int:
    """Memory available to new processes (Linux MemAvailable; else total physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (ValueError, OSError, AttributeError):
        return 4096


def usable_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(need: Resources, n_products: int) -> int:
    """How many products run at once on this machine.

    The rule: as many as both the cores and the memory hold, ``min(cores // need.num_cpus,
    available_memory * 0.8 // need.memory_mb)``, at least 1 and at most the number of products.
    On a 2-core machine a dense run takes both cores, so products run one after another; a
    16-core, 64 GB workstation runs 8.
    """
    by_cpu = usable_cpus() // max(need.num_cpus, 1)
    by_memory = int(available_memory_mb() * 0.8) // max(need.memory_mb, 1)
    return max(1, min(by_cpu, by_memory, max(n_products, 1)))


# --------------------------------------------------------------- one product (in a worker)


def run_product(job: Mapping[str, Any], cancel: CancelToken | None = None) -> dict[str, Any]:
    """Reconstruct one product; never raises for the product's own failure.

    ``job`` holds ``slug``, ``photos`` (paths), ``out`` (its run folder), ``config`` (a
    :meth:`PipelineConfig.to_dict`), optional ``threads`` (CPU threads for torch) and ``hook``
    (a :data:`WorkerHook`). Runs wherever it is called: a local worker process or a Ray task.

    Returns
    -------
    dict
        ``status`` (``finished``, ``failed`` or ``cancelled``), ``seconds``, and for a failure
        ``reason`` and ``exit_code``.
    """
    from engine.pipeline import reconstruct

    t0 = time.monotonic()
    threads = int(job.get("threads") or 0)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    hook = job.get("hook")
    slug = str(job["slug"])

    def progress(event: ProgressEvent) -> None:
        if hook is not None:
            hook(slug, event)

    from engine.progress import Cancelled

    try:
        reconstruct(
            [Path(p) for p in job["photos"]],
            Path(job["out"]),
            PipelineConfig.from_dict(job["config"]),
            progress=progress,
            cancel=cancel,
        )
    except Cancelled:
        return {"status": "cancelled", "seconds": round(time.monotonic() - t0, 1)}
    except VitrineError as exc:
        return _failure(str(exc), exc.exit_code, t0)
    except Exception as exc:  # a bug: recorded for this product, the others go on
        logger.exception("Product %s failed with an internal error", slug)
        return _failure(
            f"internal error ({type(exc).__name__}: {exc}); see {Path(job['out']) / 'run.log'}",
            1,
            t0,
        )
    return {"status": "finished", "seconds": round(time.monotonic() - t0, 1)}


def _failure(reason: str, exit_code: int, t0: float) -> dict[str, Any]:
    return {
        "status": "failed",
        "reason": reason,
        "exit_code": int(exit_code),
        "seconds": round(time.monotonic() - t0, 1),
    }


def _quiet_colmap() -> None:
    import pycolmap

    pycolmap.logging.minloglevel = 2  # COLMAP's chatter from many workers: errors only


def _worker_main(job: dict[str, Any], conn: Any) -> None:
    """Entry point of a local worker process: run one product, send the outcome back.

    ``conn`` is this worker's end of a duplex pipe: the outcome goes back through it, and a
    message from the parent (or the parent's end closing: the parent died) cancels the run.
    """
    # Ctrl-C in the terminal reaches every process of the group: the parent decides, and tells
    # the worker through the pipe; the worker must not die half-way through a write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _quiet_colmap()
    token = CancelToken()

    def watch() -> None:
        # not a multiprocessing.Event: its waiters must all wake for set() to return, and a
        # killed worker never does
        try:
            conn.recv()
        except (EOFError, OSError):
            pass
        token.cancel()

    threading.Thread(target=watch, name="vitrine-stop", daemon=True).start()
    try:
        outcome = run_product(job, token)
    except BaseException as exc:  # anything run_product let through still reaches the parent
        outcome = _failure(f"internal error ({type(exc).__name__}: {exc})", 1, time.monotonic())
    conn.send(outcome)
    conn.close()


# --------------------------------------------------------------- runners


class _LocalPool:
    """Products in worker processes (spawn), ``workers`` at a time, a dead worker retried."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))

    def run(
        self,
        jobs: Sequence[dict[str, Any]],
        done: Callable[[dict[str, Any], dict[str, Any]], None],
        cancel: CancelToken,
        started: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        import multiprocessing
        from multiprocessing.connection import wait

        ctx = multiprocessing.get_context("spawn")
        stopping = False
        queue = deque(jobs)
        tries: dict[str, int] = {}
        running: dict[Any, tuple[Any, dict[str, Any]]] = {}  # conn -> (process, job)

        def kill_all() -> None:  # the interpreter exits (second Ctrl-C): no orphans left
            for proc, _ in list(running.values()):
                if proc.is_alive():
                    proc.kill()

        atexit.register(kill_all)
        try:
            while queue or running:
                if cancel.cancelled and not stopping:
                    stopping = True
                    for conn in running:
                        try:
                            conn.send("stop")
                        except OSError:
                            pass  # that worker has stopped already
                    for job in queue:
                        done(job, {"status": "cancelled"})
                    queue.clear()
                while queue and len(running) < self.workers:
                    job = queue.popleft()
                    tries[job["slug"]] = tries.get(job["slug"], 0) + 1
                    receiver, sender = ctx.Pipe(duplex=True)
                    proc = ctx.Process(
                        target=_worker_main,
                        args=(job, sender),
                        name=f"vitrine-{job['slug']}",
                    )
                    proc.start()
                    sender.close()
                    running[receiver] = (proc, job)
                    if started is not None and tries[job["slug"]] == 1:
                        started(job)
                wait([*running, *(p.sentinel for p, _ in running.values())], timeout=0.25)
                for conn in list(running):
                    proc, job = running[conn]
                    outcome = None
                    if conn.poll():
                        try:
                            outcome = conn.recv()
                        except (EOFError, OSError):
                            outcome = None
                    elif proc.is_alive():
                        if stopping and self._overdue(job):
                            proc.kill()
                        continue
                    proc.join(timeout=CANCEL_GRACE_S if outcome is not None else 5.0)
                    if proc.is_alive():
                        proc.kill()
                        proc.join()
                    conn.close()
                    del running[conn]
                    if outcome is None:  # died without a word: killed, out of memory ...
                        outcome = self._lost(job, proc.exitcode, tries[job["slug"]], stopping)
                        if outcome is None:
                            queue.appendleft(job)
                            continue
                    outcome["attempts"] = tries[job["slug"]]
                    done(job, outcome)
        finally:
            kill_all()
            atexit.unregister(kill_all)

    @staticmethod
    def _overdue(job: dict[str, Any]) -> bool:
        since = job.setdefault("_stop_seen", time.monotonic())
        return time.monotonic() - since > CANCEL_GRACE_S

    @staticmethod
    def _lost(
        job: dict[str, Any], exitcode: int | None, tries: int, stopping: bool
    ) -> dict[str, Any] | None:
        how = (
            f"killed by signal {-exitcode}"
            if exitcode is not None and exitcode < 0
            else f"exit code {exitcode}"
        )
        if stopping:
            return {"status": "cancelled"}
        if tries <= WORKER_RETRIES:
            logger.warning("The worker of %s stopped (%s); trying it again.", job["slug"], how)
            return None
        return {
            "status": "failed",
            "reason": f"the worker process stopped unexpectedly ({how}) on each of {tries} "
            "tries; the machine may be short of memory: run again with fewer --workers",
            "exit_code": WORKER_LOST_EXIT_CODE,
        }


def _ray_fit(need: Resources, total: Mapping[str, float], local: bool, slug: str) -> Resources:
    """A product's Ray request against what the cluster has.

    On the Ray instance started here the request is cut to this machine (a ``high`` product
    asks for 4 CPUs, which a 2-core machine would never offer: the task would wait forever). On
    a cluster it is kept (an autoscaler may add nodes) with a warning when no node could run it
    now.
    """
    cpus, memory_mb = float(total.get("CPU", 0.0)), float(total.get("memory", 0.0)) / 2**20
    gpus = float(total.get("GPU", 0.0))
    if local:
        return Resources(
            num_cpus=max(1, min(need.num_cpus, int(cpus) or 1)),
            memory_mb=int(min(need.memory_mb, memory_mb)) if memory_mb else need.memory_mb,
            num_gpus=min(need.num_gpus, gpus),
        )
    if need.num_cpus > cpus or need.memory_mb > memory_mb or need.num_gpus > gpus:
        logger.warning(
            "%s asks for %d CPUs, %d MB and %g GPUs; the cluster has %g CPUs, %d MB and %g "
            "GPUs in all: its task waits until a node that large joins.",
            slug,
            need.num_cpus,
            need.memory_mb,
            need.num_gpus,
            cpus,
            memory_mb,
            gpus,
        )
    return need


def _ray_product(job: dict[str, Any]) -> dict[str, Any]:
    """A Ray task: one product (module-level so that Ray can import it on every worker)."""
    _quiet_colmap()
    return run_product(job)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ClusterUnavailableError(
            "Ray is not installed, so --ray cannot be used: install the cluster extra with "
            'pip install -e ".[cluster]" (or run without --ray to use this machine\'s cores).'
        ) from exc
    return ray


def _join_failure(address: str, exc: BaseException) -> str:
    """Why joining the cluster at ``address`` failed, and what to do."""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    advice = "Give ray://HEAD:10001 or auto (on a cluster node), or --ray local."
    if "auth" in str(exc).lower() and "token" in str(exc).lower():
        # Ray 2.52+: a cluster started with token authentication (the default of local
        # clusters from Ray 2.59) refuses drivers that do not present its token.
        advice = (
            "The cluster uses token authentication: set RAY_AUTH_MODE=token here, as on its "
            "nodes, with the cluster's token in RAY_AUTH_TOKEN or in ~/.ray/auth_token "
            "(`ray get-auth-token` on the head prints it)."
        )
    return f"Cannot join the Ray cluster at '{address}' ({text}). {advice}"


class _RayPool:
    """Products as Ray tasks, on a cluster or on a Ray instance started here.

    ``ray://host:port`` or ``auto`` joins an existing cluster; ``local`` starts Ray on this
    machine. A task whose worker dies is retried by Ray (``max_retries``).
    """

    def __init__(self, address: str) -> None:
        self.address = address

    def run(
        self,
        jobs: Sequence[dict[str, Any]],
        done: Callable[[dict[str, Any], dict[str, Any]], None],
        cancel: CancelToken,
        started: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        ray = _import_ray()
        initialised = False
        if not ray.is_initialized():
            if self.address == "local":
                # Workers import this checkout's engine (not another installed copy).
                code_root = str(Path(engine.__file__).resolve().parents[1])
                path = os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH")) if p)
                ray.init(
                    num_cpus=usable_cpus(),
                    include_dashboard=False,
                    log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": path}},
                )
            else:
                try:
                    ray.init(address=self.address, log_to_driver=False)
                except Exception as exc:  # ConnectionError, a bad address, a version mismatch
                    raise ClusterUnavailableError(_join_failure(self.address, exc)) from exc
            initialised = True
        try:
            task = ray.remote(_ray_product)
            total = ray.cluster_resources()
            refs = {}
            for job in jobs:
                need = _ray_fit(job["resources"], total, self.address == "local", job["slug"])
                options = {
                    "num_cpus": need.num_cpus,
                    "memory": need.memory_mb * 2**20,
                    "max_retries": WORKER_RETRIES,
                    "retry_exceptions": False,
                    "name": f"vitrine:{job['slug']}",
                }
                if need.num_gpus:
                    options["num_gpus"] = need.num_gpus
                payload = {k: v for k, v in job.items() if k != "resources"}
                refs[task.options(**options).remote(payload)] = job
                if started is not None:  # submitted: Ray says when it runs, not we
                    started(job)
            while refs:
                if cancel.cancelled:
                    for ref, job in refs.items():
                        try:
                            ray.cancel(ref, force=True)
                        except Exception as exc:  # the task ended, or Ray itself is stopping
                            logger.info("Could not cancel %s: %s", job["slug"], exc)
                        done(job, {"status": "cancelled"})
                    refs.clear()
                    break
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
                for ref in ready:
                    job = refs.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        outcome = {
                            "status": "failed",
                            "reason": f"the Ray task was lost on each of {WORKER_RETRIES + 1} "
                            f"tries ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})",
                            "exit_code": WORKER_LOST_EXIT_CODE,
                        }
                    done(job, outcome)
        finally:
            if initialised:
                ray.shutdown()


# --------------------------------------------------------------- the catalogue run


@dataclasses.dataclass
class CatalogueResult:
    """What :func:`run_catalogue` returns."""

    site: Path
    summary: dict[str, Any]
    computed: list[str]
    """Slugs of the products this call ran to an end (finished or failed), in the order they
    ended; products it left cancelled are not in it."""
    cancelled: bool = False

    @property
    def products(self) -> list[dict[str, Any]]:
        """summary.json's product entries."""
        return self.summary["products"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Entries of the products that failed."""
        return [p for p in self.products if p["status"] == "failed"]


def run_catalogue(
    catalogue: Path | str,
    site: Path | str,
    config: PipelineConfig,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    retry_failed: bool = False,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    worker_hook: WorkerHook | None = None,
) -> CatalogueResult:
    """Reconstruct every product of ``catalogue`` into ``site`` and write the gallery.

    Parameters
    ----------
    catalogue
        Folder of product folders (and optionally catalogue.csv).
    site
        Output folder: ``products/<slug>/`` run folders, summary.json, index.html, assets/.
    config
        Settings of every run (each product adds its name and true-scale hints).
    workers
        Products at once on this machine; None: :func:`default_workers`. Not used with Ray.
    ray_address
        ``local`` (start Ray here), ``auto`` or ``ray://host:port`` (an existing cluster);
        None: this machine's worker processes.
    retry_failed
        Run again products that failed on bad input or reconstruction (exit 2, 3) although
        their photos and settings did not change.
    progress
        Receives a ``catalogue`` event when the batch starts and after each product, with
        ``partial`` = ``{"product": entry, "seconds_left": estimate or None}``.
    cancel
        Stops the batch (running products stop at their next check; a rerun continues).
    worker_hook
        See :data:`WorkerHook` (tests).

    Raises
    ------
    VitrineError
        When the catalogue or site cannot be used, or Ray is asked for but not installed.
    """
    root = Path(catalogue)
    site = Path(site)
    if ray_address is not None:
        _import_ray()  # before any work: say at once how to get it
    return run_products(
        find_products(root, exclude=[site]),
        site,
        config,
        title=root.resolve().name.replace("_", " ") or "Catalogue",
        workers=workers,
        ray_address=ray_address,
        retry_failed=retry_failed,
        progress=progress,
        cancel=cancel,
        worker_hook=worker_hook,
        roots=[root.resolve()],
    )


def run_products(
    products: Sequence[Product],
    site: Path | str,
    config: PipelineConfig,
    *,
    title: str,
    products_dir: str = PRODUCTS,
    workers: int | None = None,
    ray_address: str | None = None,
    retry_failed: bool = False,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    worker_hook: WorkerHook | None = None,
    roots: Sequence[Path] = (),
) -> CatalogueResult:
    """Reconstruct ``products`` into ``site/<products_dir>/<slug>/`` and write the gallery.

    The engine of :func:`run_catalogue`, also used by the app's catalogue view, whose products
    are the image sets of a project (each with its own settings, :attr:`Product.config`) and
    whose site is the project folder (``products_dir="runs"``, where the sets' run folders
    are). Parameters as in :func:`run_catalogue`; ``title`` heads the gallery; ``roots`` are
    further folders whose absolute paths summary.json writes relative.

    Besides the ``catalogue`` event after each product, ``progress`` gets one when a product
    starts (``partial["started"]`` True, its entry's status ``running``).
    """
    from engine.export import gallery

    cancel = cancel or CancelToken()
    site = Path(site)
    if ray_address is not None:
        _import_ray()  # before any work: say at once how to get it
    try:
        (site / products_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot create the site folder '{site}': {exc.strerror or exc}."
        ) from exc
    previous = {p.get("slug"): p for p in _read_summary(site).get("products", [])}
    entries: dict[str, dict[str, Any]] = {}
    jobs: list[dict[str, Any]] = []
    most = Resources(1, 1024)
    for product in products:
        cfg = product_config(config, product)
        out = site / products_dir / product.slug
        entry = {
            "slug": product.slug,
            "folder": product.folder,
            "name": product.name,
            "sku": product.sku,
            "photos": len(product.photos),
            "run": f"{products_dir}/{product.slug}/",
            "status": "pending",
        }
        entries[product.slug] = entry
        if product.problem:
            entry.update(status="failed", reason=product.problem, exit_code=InputError.exit_code)
            continue
        key = run_folder.run_fingerprint(product.photos, cfg)
        entry["key"] = key
        before = previous.get(product.slug, {})
        if run_folder.up_to_date(out, product.photos, cfg):
            entry.update(
                status="finished", seconds=before.get("seconds"), attempts=before.get("attempts")
            )
            continue
        if (
            not retry_failed
            and before.get("status") == "failed"
            and before.get("key") == key
            and before.get("exit_code") in DETERMINISTIC_EXIT_CODES
        ):
            entry.update({k: before[k] for k in ("status", "reason", "exit_code") if k in before})
            continue
        need = product_resources(cfg, len(product.photos))
        most = Resources(
            max(most.num_cpus, need.num_cpus),
            max(most.memory_mb, need.memory_mb),
            max(most.num_gpus, need.num_gpus),
        )
        jobs.append(
            {
                "slug": product.slug,
                "photos": [str(p) for p in product.photos],
                "out": str(out),
                "config": cfg.to_dict(),
                "hook": worker_hook,
                "resources": need,
            }
        )
    for entry in entries.values():
        if entry["status"] == "finished":
            _describe(entry, site / products_dir / entry["slug"])

    state = _BatchState(site, title, config, entries, progress, n_jobs=len(jobs))
    state.roots = [site.resolve(), *(Path(r) for r in roots)]
    if ray_address is None:
        n = workers if workers else default_workers(most, len(jobs))
        for job in jobs:  # the cores shared out between the products running at once
            job["threads"] = max(1, usable_cpus() // n)
            job.pop("resources")
        runner: Any = _LocalPool(n)
        logger.info("Catalogue: %d products to compute, %d at a time", len(jobs), n)
    else:
        runner = _RayPool(ray_address)
    state.start()
    try:
        if jobs:
            runner.run(jobs, state.finished, cancel, started=state.started)
    finally:
        state.write_summary()
        _write_site(site, title, list(entries.values()), gallery, products_dir)
    return CatalogueResult(
        site=site,
        summary=state.summary(),
        computed=list(state.computed),
        cancelled=cancel.cancelled,
    )


class _BatchState:
    """The summary as products finish: written atomically after each, progress reported."""

    def __init__(
        self,
        site: Path,
        title: str,
        config: PipelineConfig,
        entries: dict[str, dict[str, Any]],
        progress: ProgressCallback,
        n_jobs: int,
    ) -> None:
        self.site = site
        self.title = title
        self.config = config
        self.entries = entries
        self.progress = progress
        self.n_jobs = n_jobs
        self.n_done = 0
        self.computed: list[str] = []
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.roots: list[Path] = [site.resolve()]

    def start(self) -> None:
        self.write_summary()
        self.progress(
            ProgressEvent(
                "catalogue",
                0,
                self.n_jobs,
                f"{len(self.entries)} products, {self.n_jobs} to compute",
                partial={"product": None, "seconds_left": None},
            )
        )

    def started(self, job: dict[str, Any]) -> None:
        with self.lock:
            entry = self.entries[job["slug"]]
            entry["status"] = "running"
            self.progress(
                ProgressEvent(
                    "catalogue",
                    self.n_done,
                    self.n_jobs,
                    f"{job['slug']}: started",
                    partial={"product": dict(entry), "started": True, "seconds_left": None},
                )
            )

    def finished(self, job: dict[str, Any], outcome: dict[str, Any]) -> None:
        with self.lock:
            entry = self.entries[job["slug"]]
            for stale in ("reason", "exit_code", "verdict", "reasons", "dimensions_mm"):
                entry.pop(stale, None)
            entry["status"] = outcome["status"] if outcome["status"] != "cancelled" else "pending"
            for key in ("reason", "exit_code", "seconds", "attempts"):
                if key in outcome:
                    entry[key] = outcome[key]
            if entry["status"] == "finished":
                _describe(entry, Path(job["out"]))
            if outcome["status"] == "cancelled":
                return
            self.computed.append(job["slug"])
            self.n_done += 1
            self.write_summary()
            elapsed = time.monotonic() - self.t0
            left = None
            if 0 < self.n_done < self.n_jobs:
                left = elapsed / self.n_done * (self.n_jobs - self.n_done)
            self.progress(
                ProgressEvent(
                    "catalogue",
                    self.n_done,
                    self.n_jobs,
                    _product_line(entry),
                    partial={"product": dict(entry), "seconds_left": left},
                )
            )

    def summary(self) -> dict[str, Any]:
        products = list(self.entries.values())
        counts: dict[str, int] = {}
        for p in products:
            counts[p["status"]] = counts.get(p["status"], 0) + 1
        verdicts: dict[str, int] = {}
        for p in products:
            if p.get("verdict"):
                verdicts[p["verdict"]] = verdicts.get(p["verdict"], 0) + 1
        return {
            "vitrine_version": engine.__version__,
            "title": self.title,
            "preset": self.config.preset,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "counts": counts,
            "verdicts": verdicts,
            "products": products,
        }

    def write_summary(self) -> None:
        write_json_atomic(self.site / SUMMARY_NAME, self.summary(), roots=self.roots)


def _product_line(entry: Mapping[str, Any]) -> str:
    """One line for a finished product: ``bottle: ready (31 s)`` / ``x: failed, exit 2: ...``."""
    took = f" ({entry['seconds']:.0f} s)" if entry.get("seconds") is not None else ""
    if entry["status"] == "finished":
        return f"{entry['slug']}: {entry.get('verdict', 'finished')}{took}"
    return f"{entry['slug']}: failed, exit {entry.get('exit_code')}{took}: {entry.get('reason')}"


def _describe(entry: dict[str, Any], run_dir: Path) -> None:
    """Verdict, reasons and dimensions of a finished product from its report.json."""
    from engine.export.gallery import read_report, verdict

    report = read_report(run_dir)
    if report is None:
        entry.update(verdict="reshoot", reasons=["report.json is missing or unreadable"])
        return
    entry["verdict"], entry["reasons"] = verdict(report, run_dir)
    entry["dimensions_mm"] = report.get("dimensions_mm")
    entry["unregistered"] = len(report.get("unregistered") or {})


def _write_site(
    site: Path, title: str, entries: list[dict[str, Any]], gallery: Any, products_dir: str
) -> None:
    """Stills, product pages, the vendored viewer and index.html.

    A product whose still cannot be rendered keeps its card, without the picture.
    """
    gallery.vendor_model_viewer(site)
    for entry in entries:
        if entry["status"] != "finished":
            continue
        run_dir = site / products_dir / entry["slug"]
        glb = run_dir / "mesh.glb"
        if glb.is_file():
            try:
                gallery.write_still(glb, run_dir / gallery.STILL)
            except (VitrineError, ValueError, MemoryError) as exc:
                logger.warning("No still picture of %s: %s", entry["slug"], exc)
        gallery.write_product_page(run_dir, entry, site)
    gallery.write_gallery(site, entries, title=title, products_dir=products_dir)


def _read_summary(site: Path) -> dict[str, Any]:
    try:
        data = json.loads((site / SUMMARY_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
