"""What build.spec builds on each platform, as plain data that tests can check without PyInstaller.

``build.spec`` asks :func:`plan` for the platform it runs on and hands the answer to PyInstaller;
the tests call it with ``platform="win32"``, ``"darwin"`` or ``"linux"`` and check each branch
here, on Linux, where PyInstaller cannot build the other two.

What the plan decides:

- the executables: one console ``vitrine`` everywhere (the command line, ``--selftest``, and the
  window when started without arguments); on Windows a second, windowed ``Vitrine.exe`` for the
  Start menu (no console window beside the app); on macOS a ``Vitrine.app`` around the folder;
- the icon each platform's executable or app carries (``.ico``, ``.icns``; Linux icons belong to
  the desktop entry, see packaging/build_deb.sh);
- what is left out of the bundle (:func:`keep`): files the app never loads (torch's C++ headers,
  test programs and test libraries, static and import libraries, CMake files, Qt translations
  and Qt plugins for display servers and formats a desktop app here does not use);
- on Linux, which system libraries PyInstaller copied only for what is left out
  (:func:`prune_orphans`: the GTK stack behind Qt's GTK theme plugin);
- which libraries are stripped of their symbol tables (:func:`strip_wanted`): Linux only, all
  of them (torch's CPU wheel ships its own unstripped, about 100 MB of symbols; libpython and
  many extensions keep theirs);
- which Python packages are not collected at all (:data:`EXCLUDES`, :data:`TORCH_UNUSED`,
  :data:`SCIPY_UNUSED`, :func:`transformers_model_excludes`): what the app never imports.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PLATFORMS = ("linux", "win32", "darwin")

#: Python packages never shipped: development tools, and what the app does not import.
EXCLUDES: tuple[str, ...] = (
    "tkinter", "_tkinter", "matplotlib", "IPython", "jupyter", "notebook", "pandas",
    "pytest", "_pytest", "pytestqt", "pytest_xvfb", "pyvirtualdisplay", "importlinter", "grimp",
    "trimesh", "tests",
    # torch development tools the app never uses
    "torch.utils.tensorboard", "tensorboard", "torchvision", "torchaudio",
    # Ray, for `batch --ray` (the cluster extra of a source install): the packaged app runs
    # catalogues on this machine's cores. (Hugging Face's `kernels` stays: left out, loading the
    # depth network failed in the frozen app, "Kernels are not available".)
    "ray",
    # Optional packages no code path of the app imports (none was imported by the selftest, a
    # reconstruction, the window, or loading a depth and a segmentation network): Hugging Face's
    # Xet downloader (huggingface_hub falls back to plain HTTPS without it), torch.compile's
    # graph library, syntax highlighting, pydantic (huggingface_hub's webhooks server), and
    # protobuf (sentencepiece tokenizers).
    # (Hugging Face's `tokenizers`, 11 MB, stays although the app's networks take images:
    # left out, transformers 5.25 failed to import AutoImageProcessor and
    # DepthAnythingForDepthEstimation, "No module named 'tokenizers'" from
    # transformers/utils/chat_parsing/token_ids.py.)
    "hf_xet", "networkx", "pygments", "pydantic", "pydantic_core", "google.protobuf",
)  # fmt: skip

#: Parts of torch the app never imports (torch.compile's code generators and passes,
#: quantization tooling, distributed training, test helpers, ROCm conversion, benchmarks).
#: PyInstaller's torch hook collects every torch submodule, as bytecode and as source; only
#: subpackages in which running the app imported no module at all are listed (torch itself
#: imports parts of torch._inductor, torch.distributed and torch.testing at start-up: those stay).
TORCH_UNUSED: tuple[str, ...] = (
    "torch._inductor.codegen", "torch._inductor.fx_passes", "torch._inductor.kernel",
    "torch._inductor.template_heuristics", "torch._inductor.autoheuristic",
    "torch._inductor.runtime.caching",
    "torch._vendor.quack",
    "torch.ao.quantization.fx", "torch.ao.ns", "torch.ao.pruning",
    "torch.ao.quantization.backend_config",
    "torch.distributed.checkpoint", "torch.distributed.elastic", "torch.distributed.pipelining",
    "torch.distributed._tools", "torch.distributed.optim",
    "torch.distributed.algorithms.ddp_comm_hooks",
    "torch.distributed.flight_recorder", "torch.distributed.tensor.experimental",
    "torch.testing._internal.generated", "torch.testing._internal.opinfo",
    "torch.testing._internal.distributed.rpc", "torch.testing._internal.distributed._tensor",
    "torch.testing._internal.fake_config_module", "torch.testing._internal.fake_config_module2",
    "torch.testing._internal.fake_config_module3",
    "torch.utils.hipify", "torch.utils.benchmark", "torch.utils.model_dump",
    "torch._export.serde", "torch._export.passes", "torch.export.pt2_archive",
    "torch.backends._nnapi", "torch._dynamo.repro",
    "torch.fx.experimental.migrate_gradual_types", "torch.onnx._internal.fx",
    "torch._numpy.testing",
)  # fmt: skip

#: Parts of torch collected as bytecode only (PyInstaller's torch hook ships every module's .py
#: source beside its bytecode, for TorchScript, which compiles from source): subpackages the
#: app imports but never scripts. torch.distributed, torch.jit and torch.nn keep their sources
#: (without torch.distributed's the frozen app aborted at start, "GradBucket ... already
#: defined").
TORCH_BYTECODE_ONLY: tuple[str, ...] = (
    "torch._dynamo", "torch._inductor", "torch.fx", "torch.onnx", "torch._functorch",
    "torch.ao", "torch.testing", "torch._higher_order_ops", "torch._subclasses", "torch._export",
    "torch.export", "torch.utils", "torch._refs", "torch._decomp", "torch._prims",
    "torch._numpy", "torch.distributions", "torch.optim", "torch.masked", "torch.sparse",
    "torch.nested", "torch.package", "torch._library",
)  # fmt: skip

#: Modules inside those that read their own source when imported: torch's config modules
#: (``install_config_module`` parses the module's source for its comments; without it the
#: frozen app failed at start, "OSError: could not get source code" from
#: torch.fx.experimental._config). They keep their .py.
TORCH_KEEP_SOURCES: tuple[str, ...] = (
    "torch._dynamo.config", "torch._export.config", "torch._functorch.config",
    "torch._inductor.config", "torch._inductor.config_comms", "torch.fx.experimental._config",
    "torch.utils.serialization.config",
)  # fmt: skip


def collection_modes() -> dict[str, str]:
    """PyInstaller's ``module_collection_mode`` for Analysis: which modules ship as bytecode only.

    ``"pyz"`` (bytecode in the archive) for :data:`TORCH_BYTECODE_ONLY`, ``"pyz+py"`` (the
    torch hook's choice: bytecode and source) again for :data:`TORCH_KEEP_SOURCES` inside them.
    """
    modes = dict.fromkeys(TORCH_BYTECODE_ONLY, "pyz")
    modes.update(dict.fromkeys(TORCH_KEEP_SOURCES, "pyz+py"))
    return modes


#: SciPy subpackages nothing imports (the app uses scipy.spatial, scipy.sparse(.csgraph) and
#: scipy.ndimage, which bring scipy.linalg, scipy.optimize, scipy.special and scipy.fft).
SCIPY_UNUSED: tuple[str, ...] = (
    "scipy.io", "scipy.stats", "scipy.interpolate", "scipy.integrate", "scipy.signal",
    "scipy.special.cython_special",
)  # fmt: skip

#: transformers imports model classes lazily by name: the depth network (Depth-Anything with its
#: DINOv2 backbone) and the semantic-segmentation families AutoModelForSemanticSegmentation maps
#: to (and their usual backbones).
TRANSFORMERS_FAMILIES: tuple[str, ...] = (
    "depth_anything", "dinov2", "dpt", "vit", "vit_hybrid", "bit",
    "segformer", "beit", "data2vec", "mobilenet_v2", "mobilevit", "mobilevitv2",
    "upernet", "convnext", "convnextv2", "swin",
)  # fmt: skip

#: transformers.models packages the auto classes import whatever the model (besides the families).
TRANSFORMERS_ALWAYS: tuple[str, ...] = ("auto", "encoder_decoder")


def transformers_model_excludes(installed: Iterable[str]) -> tuple[str, ...]:
    """``transformers.models.<name>`` for every installed model package the app does not load.

    PyInstaller follows ``transformers/models/__init__.py``'s imports of all of them (about 560
    architectures in transformers 5.25, 40 MB of sources and bytecode); the app loads only
    :data:`TRANSFORMERS_FAMILIES`, through :data:`TRANSFORMERS_ALWAYS`. ``installed`` is the
    names of the folders in the build environment's ``transformers/models/``.
    """
    keep = {*TRANSFORMERS_FAMILIES, *TRANSFORMERS_ALWAYS}
    return tuple(
        f"transformers.models.{name}"
        for name in sorted(installed)
        if name not in keep and name.isidentifier() and not name.startswith("_")
    )


def installed_subpackages(package: str, sub: str) -> list[str]:
    """Names of the folders in ``<package>/<sub>/`` as installed, without importing ``package``.

    Empty when the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    names: list[str] = []
    for location in spec.submodule_search_locations:
        folder = Path(location) / sub
        if folder.is_dir():
            names += [p.name for p in folder.iterdir() if (p / "__init__.py").is_file()]
    return sorted(set(names))


#: Distributions whose metadata is read at run time through importlib.metadata (transformers'
#: own hook copies those of its dependency table; these our code paths were seen to need).
METADATA: tuple[str, ...] = (
    "torch", "tqdm", "numpy", "safetensors", "huggingface_hub", "tokenizers",
    "filelock", "packaging", "pyyaml", "regex", "requests", "pycolmap", "plotly",
)  # fmt: skip

#: Packages whose data files no PyInstaller hook collects. transformers 5 loads models with
#: Hugging Face's `kernels` whenever that is installed (use_kernels defaults to on), and kernels
#: reads its python_depends.json on import: without it the depth network does not load.
DATA_PACKAGES: tuple[str, ...] = ("kernels",)

#: Bundle paths (relative, "/"-separated, fnmatch patterns) left out on every platform.
DROP_COMMON: tuple[str, ...] = (
    # torch: C++ headers, CMake files, test programs and test libraries (none is loaded by the
    # app; torch/bin/torch_shm_manager is kept: DataLoader workers start it)
    "torch/include/*",
    "torch/share/*",
    "torch/test/*",
    "torch/bin/*",  # torch_shm_manager is kept (KEEP_ALWAYS)
    "torch/lib/*test*",
    "torch/lib/libbackend_with_compiler*",
    "torch/lib/libaoti_custom_ops*",
    # static libraries, import libraries, headers and type stubs anywhere
    "*.a",
    "*.lib",
    "*.h",
    "*.hpp",
    "*.pyi",
    "*/tests/*",
    # Qt: translations of Qt's own dialogs (the app is English only), QML (not used)
    "PySide6/Qt/translations/*",
    "PySide6/Qt/qml/*",
    # plotly's Jupyter widget (FigureWidget; viewer.html inlines plotly.min.js only)
    "plotly/package_data/widgetbundle.js",
)

#: Left out on Linux besides: Qt platform plugins for framebuffers, VNC and embedded displays
#: (the desktop app runs under X11/XWayland (xcb), Wayland, or offscreen for checks).
DROP_LINUX: tuple[str, ...] = (
    "PySide6/Qt/plugins/platforms/libqvnc.so",
    "PySide6/Qt/plugins/platforms/libqlinuxfb.so",
    "PySide6/Qt/plugins/platforms/libqminimal*.so",
    "PySide6/Qt/plugins/platforms/libqeglfs.so",
    "PySide6/Qt/plugins/platforms/libqvkkhrdisplay.so",
    "PySide6/Qt/plugins/egldeviceintegrations/*",
    "PySide6/Qt/plugins/generic/*",
    "libQt6EglFS*",  # only the eglfs plugin above loads these
    # Qt's GTK theme plugin drags the build machine's GTK 3, Cairo and Pango into the bundle
    # (prune_orphans drops them after it); the xdg-desktop-portal theme stays
    "PySide6/Qt/plugins/platformthemes/libqgtk3.so",
)

#: Kept although a drop pattern matches.
KEEP_ALWAYS: tuple[str, ...] = ("torch/bin/torch_shm_manager*",)

#: Libraries stripped of their symbol tables on Linux (``strip --strip-unneeded``: the dynamic
#: symbols the loader needs stay): all of them. torch's ship unstripped (about 100 MB of
#: symbols), libpython carries its debugging information (17 MB), and many wheels' own libraries
#: and extensions keep a symbol table (pycolmap's extension 8 MB, tokenizers, PIL, ...).
STRIP_LINUX: tuple[str, ...] = ("*.so", "*.so.*")


@dataclass(frozen=True)
class Executable:
    """One executable of the bundle: its file name and whether it opens a console window."""

    name: str
    console: bool


@dataclass(frozen=True)
class SpecPlan:
    """The platform-dependent choices of build.spec (see the module's docstring)."""

    platform: str
    executables: tuple[Executable, ...]
    icon: str | None
    app_bundle: dict | None
    excludes: tuple[str, ...]
    drop: tuple[str, ...]
    strip: tuple[str, ...] = field(default=())
    #: Drop system libraries nothing kept needs (see :func:`prune_orphans`).
    prune_system_libs: bool = False
    #: macOS: turn the Finder's "open these folders" event at launch into arguments.
    argv_emulation: bool = False

    @property
    def folder(self) -> str:
        """Name of the one-folder bundle in dist/."""
        return "vitrine"


def plan(
    platform: str | None = None,
    *,
    with_usd: bool = False,
    transformers_models: Iterable[str] = (),
) -> SpecPlan:
    """The build plan for a platform (default: this one).

    Parameters
    ----------
    platform
        ``sys.platform`` of the build machine: ``"linux"``, ``"win32"`` or ``"darwin"``.
    with_usd
        Ship usd-core (``pxr``, about 210 MB) for mesh.usdz; left out by default.
    transformers_models
        The model packages installed in ``transformers/models/`` (see
        :func:`installed_subpackages`): those the app does not load are excluded.

    Raises
    ------
    ValueError
        For a platform PyInstaller builds Vitrine for nowhere.
    """
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux"):
        platform = "linux"
    if platform not in PLATFORMS:
        raise ValueError(f"No build plan for platform {platform!r}: one of {PLATFORMS}.")
    excludes = (
        *EXCLUDES,
        *TORCH_UNUSED,
        *SCIPY_UNUSED,
        *transformers_model_excludes(transformers_models),
        *(() if with_usd else ("pxr",)),
    )
    console = Executable("vitrine", console=True)
    if platform == "win32":
        return SpecPlan(
            platform,
            # Vitrine.exe and vitrine.exe differ only in case, which Windows does not tell
            # apart: the windowed one is named VitrineApp.exe.
            executables=(console, Executable("VitrineApp", console=False)),
            icon="resources/icons/vitrine.ico",
            app_bundle=None,
            excludes=excludes,
            drop=DROP_COMMON,
        )
    if platform == "darwin":
        return SpecPlan(
            platform,
            executables=(console,),
            icon="resources/icons/vitrine.icns",
            app_bundle={
                "name": "Vitrine.app",
                "bundle_identifier": "org.vitrine.app",
                "icon": "resources/icons/vitrine.icns",
                "info_plist": {
                    "NSHighResolutionCapable": True,
                    "CFBundleDisplayName": "Vitrine",
                    # Folders dropped on the Dock icon arrive as file-open events.
                    "CFBundleDocumentTypes": [
                        {
                            "CFBundleTypeName": "Folder",
                            "CFBundleTypeRole": "Viewer",
                            "LSItemContentTypes": ["public.folder"],
                        }
                    ],
                },
            },
            excludes=excludes,
            drop=DROP_COMMON,
            argv_emulation=True,
        )
    return SpecPlan(
        platform,
        executables=(console,),
        icon=None,
        app_bundle=None,
        excludes=excludes,
        drop=(*DROP_COMMON, *DROP_LINUX),
        strip=STRIP_LINUX,
        prune_system_libs=True,
    )


def _norm(dest: str) -> str:
    return dest.replace("\\", "/").lstrip("./")


def keep(dest: str, spec_plan: SpecPlan) -> bool:
    """Whether a file bound for ``dest`` (its path inside the bundle) goes into the bundle."""
    dest = _norm(dest)
    if any(fnmatch.fnmatchcase(dest, pattern) for pattern in KEEP_ALWAYS):
        return True
    return not any(fnmatch.fnmatchcase(dest, pattern) for pattern in spec_plan.drop)


def strip_wanted(dest: str, spec_plan: SpecPlan) -> bool:
    """Whether the library bound for ``dest`` is stripped of its symbol table."""
    dest = _norm(dest)
    return any(fnmatch.fnmatchcase(dest, pattern) for pattern in spec_plan.strip)


def load_segments_aligned(path: str | Path, page: int = 4096) -> bool:
    """Whether every loadable segment of a 64-bit ELF file starts at a page boundary's offset.

    The loader refuses a library whose PT_LOAD segment has ``p_vaddr - p_offset`` not a
    multiple of the page size ("ELF load command address/offset not page-aligned"). ``strip``
    produces such files from some libraries that auditwheel rewrote with patchelf (numpy's and
    SciPy's OpenBLAS and libgfortran). Files that are not 64-bit little-endian ELF count as
    aligned (nothing to check).
    """
    with open(path, "rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return True
        phoff = int.from_bytes(header[32:40], "little")
        phentsize = int.from_bytes(header[54:56], "little")
        phnum = int.from_bytes(header[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        entry = table[i * phentsize : (i + 1) * phentsize]
        if int.from_bytes(entry[0:4], "little") != 1:  # PT_LOAD
            continue
        offset = int.from_bytes(entry[8:16], "little")
        vaddr = int.from_bytes(entry[16:24], "little")
        if (vaddr - offset) % page:
            return False
    return True


def stripped_copy(src: str | Path, cache: str | Path) -> Path:
    """A copy of the library ``src`` without its symbol table, made once into ``cache``.

    ``strip --strip-unneeded`` removes the static symbol table and debugging sections and keeps
    the dynamic symbols the loader and ``dlsym`` use. The copy is remade when ``src`` changes.
    Where stripping would leave a library the loader refuses (:func:`load_segments_aligned`),
    ``src`` itself is returned: that library ships as it came.

    Raises
    ------
    RuntimeError
        When ``strip`` is missing or fails (the build must not ship a half-written library).
    """
    src = Path(src)
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    stat = src.stat()
    out = cache / f"{src.name}.{stat.st_size}-{int(stat.st_mtime)}"
    if out.is_file():
        return out
    if (cache / f"{out.name}.unstrippable").is_file():
        return src
    tool = shutil.which("strip")
    if tool is None:
        raise RuntimeError("`strip` (binutils) is needed to build on Linux: apt install binutils")
    tmp = out.with_suffix(".tmp")
    result = subprocess.run(
        [tool, "--strip-unneeded", "-o", str(tmp), str(src)], capture_output=True, text=True
    )
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"strip failed on {src}: {result.stderr.strip()}")
    if load_segments_aligned(src) and not load_segments_aligned(tmp):
        tmp.unlink()
        (cache / f"{out.name}.unstrippable").touch()
        return src
    tmp.replace(out)
    return out


#: Where the build machine's own libraries come from (PyInstaller copies the ones it finds
#: needed: X11/xcb helpers, fontconfig, ...).
SYSTEM_LIB_DIRS: tuple[str, ...] = ("/usr/lib/", "/lib/", "/usr/lib64/", "/lib64/")


def elf_needed(path: str | Path) -> set[str]:
    """The DT_NEEDED names of an ELF file (``readelf -d``); empty for other files."""
    result = subprocess.run(
        ["readelf", "-d", "--wide", str(path)], capture_output=True, text=True, check=False
    )
    names = set()
    for line in result.stdout.splitlines():
        if "(NEEDED)" in line and "[" in line:
            names.add(line.rsplit("[", 1)[1].rstrip("]").strip())
    return names


def prune_orphans(
    binaries: list[tuple[str, str, str]],
    needed=elf_needed,  # noqa: ANN001 - a callable path -> set of library names
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Drop system libraries that no kept library needs any more.

    PyInstaller copies a system library (from ``SYSTEM_LIB_DIRS``) because something in the
    bundle links to it; once that something is left out (Qt's GTK theme plugin), the library
    and what only it needed are dead weight. Starting from every library that is not a system
    one (the packages' own, which Python or ctypes load), this follows the DT_NEEDED links and
    keeps the system libraries reached. Libraries of the packages themselves are never dropped:
    torch, for one, loads some of its own with ctypes, which no link shows.

    Returns
    -------
    tuple
        ``(kept entries, dropped entries)``, entries as ``(dest, src, typecode)``.
    """

    def is_system(src: str) -> bool:
        return str(src).startswith(SYSTEM_LIB_DIRS)

    by_name: dict[str, list[str]] = {}
    for dest, src, _kind in binaries:
        by_name.setdefault(Path(dest).name, []).append(src)
        by_name.setdefault(Path(src).name, []).append(src)
    reached: set[str] = set()
    todo = [src for _dest, src, _kind in binaries if not is_system(src)]
    while todo:
        src = todo.pop()
        if src in reached:
            continue
        reached.add(src)
        for name in needed(src):
            todo.extend(by_name.get(name, ()))
    kept = [e for e in binaries if not is_system(e[1]) or e[1] in reached]
    dropped = [e for e in binaries if is_system(e[1]) and e[1] not in reached]
    return kept, dropped
