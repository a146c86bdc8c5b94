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
- which libraries are stripped of their symbol tables (:func:`strip_wanted`): Linux only, and
  only torch's own libraries, which the CPU wheel ships unstripped (about 100 MB of symbols);
  the others are stripped already, and the wheels' auditwheel-patched libraries are left alone.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
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
)  # fmt: skip

#: transformers imports model classes lazily by name: the depth network (Depth-Anything with its
#: DINOv2 backbone) and the semantic-segmentation families AutoModelForSemanticSegmentation maps
#: to (and their usual backbones).
TRANSFORMERS_FAMILIES: tuple[str, ...] = (
    "depth_anything", "dinov2", "dpt", "vit", "vit_hybrid", "bit",
    "segformer", "beit", "data2vec", "mobilenet_v2", "mobilevit", "mobilevitv2",
    "upernet", "convnext", "convnextv2", "swin",
)  # fmt: skip

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
#: symbols the loader needs stay).
STRIP_LINUX: tuple[str, ...] = ("torch/lib/libtorch_cpu.so", "torch/lib/libtorch_python.so")


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


def plan(platform: str | None = None, *, with_usd: bool = False) -> SpecPlan:
    """The build plan for a platform (default: this one).

    Parameters
    ----------
    platform
        ``sys.platform`` of the build machine: ``"linux"``, ``"win32"`` or ``"darwin"``.
    with_usd
        Ship usd-core (``pxr``, about 210 MB) for mesh.usdz; left out by default.

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
    excludes = EXCLUDES if with_usd else (*EXCLUDES, "pxr")
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


def stripped_copy(src: str | Path, cache: str | Path) -> Path:
    """A copy of the library ``src`` without its symbol table, made once into ``cache``.

    ``strip --strip-unneeded`` removes the static symbol table and debugging sections and keeps
    the dynamic symbols the loader and ``dlsym`` use. The copy is remade when ``src`` changes.

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
