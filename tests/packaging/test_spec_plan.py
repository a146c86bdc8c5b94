"""build.spec's platform branches, checked on Linux with the platform mocked.

PyInstaller builds for the platform it runs on only, so the Windows and macOS branches are
checked here by executing build.spec with PyInstaller's spec API replaced by recorders, and by
asking packaging/spec_plan.py (where the choices live) for each platform.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packaging"))
import spec_plan  # noqa: E402

# ------------------------------------------------------------------------------------ the plan


def test_each_platform_has_a_console_vitrine_and_its_own_face():
    linux, win, mac = (spec_plan.plan(p) for p in ("linux", "win32", "darwin"))
    for plan in (linux, win, mac):
        assert plan.executables[0] == spec_plan.Executable("vitrine", console=True)
        assert "pxr" in plan.excludes and "ray" in plan.excludes
        assert "kernels" not in plan.excludes  # transformers needs it where it was installed
        assert "tokenizers" not in plan.excludes  # transformers imports it for image models too
        assert "hf_xet" in plan.excludes  # huggingface_hub downloads over HTTPS without it
    # Windows: a windowed exe for the Start menu, named apart from vitrine.exe (case-blind FS)
    assert [e.name.lower() for e in win.executables] == ["vitrine", "vitrineapp"]
    assert win.executables[1].console is False
    assert win.icon.endswith(".ico") and (ROOT / win.icon).is_file()
    assert win.app_bundle is None and not win.strip and not win.prune_system_libs
    # macOS: Vitrine.app with an .icns, taking folders dropped on it
    assert mac.app_bundle["name"] == "Vitrine.app"
    assert mac.app_bundle["bundle_identifier"] == "org.vitrine.app"
    assert (ROOT / mac.app_bundle["icon"]).is_file()
    doc_types = mac.app_bundle["info_plist"]["CFBundleDocumentTypes"]
    assert doc_types[0]["LSItemContentTypes"] == ["public.folder"]
    assert mac.argv_emulation and not mac.strip
    # Linux: strips torch's libraries and prunes the system libraries left without a user
    assert linux.icon is None and linux.app_bundle is None
    assert linux.strip and linux.prune_system_libs
    assert spec_plan.plan("linux2").platform == "linux"
    with pytest.raises(ValueError, match="No build plan"):
        spec_plan.plan("sunos5")


def test_usd_is_shipped_only_when_asked():
    assert "pxr" in spec_plan.plan("linux").excludes
    assert "pxr" not in spec_plan.plan("linux", with_usd=True).excludes


@pytest.mark.parametrize(
    ("dest", "kept"),
    [
        ("torch/lib/libtorch_cpu.so", True),
        ("torch/lib/libc10.so", True),
        ("torch/lib/libtorch_global_deps.so", True),  # torch loads it with ctypes
        ("torch/bin/torch_shm_manager", True),
        ("torch/bin/test_api", False),
        ("torch/lib/libtorchbind_test.so", False),
        ("torch/lib/libjitbackend_test.so", False),
        ("torch/include/ATen/ATen.h", False),
        ("torch/testing/_internal/common_utils.py", True),  # sources torch may read
        ("transformers/models/dinov2/modeling_dinov2.py", True),
        ("torch/lib/dnnl.lib", False),
        ("torch\\lib\\dnnl.lib", False),  # Windows separators
        ("scipy/special/tests/data/boost.npz", False),
        ("PySide6/Qt/translations/qtbase_de.qm", False),
        ("PySide6/Qt/plugins/platforms/libqxcb.so", True),
        ("PySide6/Qt/plugins/platforms/libqwayland.so", True),
        ("PySide6/Qt/plugins/platforms/libqoffscreen.so", True),
        ("PySide6/Qt/plugins/platforms/libqvnc.so", False),
        ("PySide6/Qt/plugins/platformthemes/libqgtk3.so", False),
        ("PySide6/Qt/plugins/platformthemes/libqxdgdesktopportal.so", True),
        ("PySide6/Qt/plugins/imageformats/libqjpeg.so", True),
        ("plotly/package_data/plotly.min.js", True),
        ("plotly/package_data/widgetbundle.js", False),
        ("resources/style.qss", True),
        ("resources/icons/vitrine.png", True),
    ],
)
def test_linux_keeps_what_the_app_loads(dest, kept):
    assert spec_plan.keep(dest, spec_plan.plan("linux")) is kept


def test_windows_and_macos_keep_their_platform_plugins():
    win, mac = spec_plan.plan("win32"), spec_plan.plan("darwin")
    assert spec_plan.keep("PySide6/plugins/platforms/qwindows.dll", win)
    assert spec_plan.keep("PySide6/Qt/plugins/platforms/libqcocoa.dylib", mac)
    assert not spec_plan.keep("torch/lib/dnnl.lib", win)  # 600 MB import library on Windows
    assert not spec_plan.keep("torch/include/c10/core/Device.h", mac)


def test_every_library_is_stripped_and_only_on_linux():
    linux = spec_plan.plan("linux")
    for lib in (
        "torch/lib/libtorch_cpu.so",
        "torch/lib/libtorch_python.so",
        "pycolmap/_core.cpython-311-x86_64-linux-gnu.so",
        "numpy.libs/libscipy_openblas64_-32a4b2a6.so",
        "libpython3.11.so.1.0",
        "PySide6/Qt/lib/libQt6Core.so.6",
    ):
        assert spec_plan.strip_wanted(lib, linux), lib
    # the executable carries the bytecode archive after its ELF image: never stripped
    assert not spec_plan.strip_wanted("vitrine", linux)
    assert not spec_plan.strip_wanted("base_library.zip", linux)
    for other in ("win32", "darwin"):
        assert not spec_plan.strip_wanted("torch/lib/libtorch_cpu.so", spec_plan.plan(other))


def test_only_the_model_packages_the_app_loads_are_kept():
    installed = ["albert", "auto", "bert", "depth_anything", "dinov2", "encoder_decoder",
                 "segformer", "whisper", "__pycache__"]  # fmt: skip
    excluded = spec_plan.transformers_model_excludes(installed)
    assert excluded == (
        "transformers.models.albert",
        "transformers.models.bert",
        "transformers.models.whisper",
    )
    plan = spec_plan.plan("linux", transformers_models=installed)
    assert set(excluded) <= set(plan.excludes)
    for kept in ("depth_anything", "dinov2", "segformer", "auto", "encoder_decoder"):
        assert f"transformers.models.{kept}" not in plan.excludes
    # every family the model manager may load stays, whatever is installed
    assert not set(spec_plan.transformers_model_excludes(spec_plan.TRANSFORMERS_FAMILIES))


def test_installed_subpackages_lists_folders_without_importing(monkeypatch, tmp_path):
    models = tmp_path / "fakepkg" / "models"
    for name, is_package in (("alpha", True), ("beta", True), ("data", False)):
        (models / name).mkdir(parents=True)
        if is_package:
            (models / name / "__init__.py").write_text("raise ImportError('not imported')\n")
    (tmp_path / "fakepkg" / "__init__.py").write_text("raise ImportError('not imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert spec_plan.installed_subpackages("fakepkg", "models") == ["alpha", "beta"]
    assert spec_plan.installed_subpackages("fakepkg", "nothing") == []
    assert spec_plan.installed_subpackages("no_such_package_here", "models") == []


def _imported_modules(paths) -> set[str]:  # noqa: ANN001 - Python files
    import ast

    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_the_app_imports_is_excluded():
    plan = spec_plan.plan("linux", transformers_models=["whisper", "depth_anything"])
    excluded = set(plan.excludes) - {"tests"}
    sources = [ROOT / "main.py", *(ROOT / "engine").rglob("*.py"), *(ROOT / "gui").rglob("*.py")]
    imported = _imported_modules(sources)
    clashes = {
        name for name in imported for ex in excluded if name == ex or name.startswith(ex + ".")
    }
    # on purpose: Ray (`batch --ray` says it is not installed) and usd-core (mesh.usdz is
    # skipped without it); nothing else the app's code names may be left out
    assert {name.split(".")[0] for name in clashes} <= {"ray", "pxr"}, clashes
    # the excluded parts of torch and scipy are below packages the app does use
    assert all(name.startswith(("torch.", "scipy.")) for name in
               (*spec_plan.TORCH_UNUSED, *spec_plan.SCIPY_UNUSED))  # fmt: skip
    for used in ("scipy.spatial", "scipy.sparse", "scipy.ndimage", "torch.nn", "torch.distributed"):
        assert used not in plan.excludes


def test_system_libraries_nothing_kept_needs_are_pruned():
    links = {
        "/venv/PySide6/Qt/lib/libQt6Gui.so.6": {"libfontconfig.so.1", "libc.so.6"},
        "/usr/lib/x86_64-linux-gnu/libfontconfig.so.1": {"libexpat.so.1"},
        "/usr/lib/x86_64-linux-gnu/libexpat.so.1": set(),
        # left after Qt's GTK theme plugin was dropped: GTK and what only it needs
        "/usr/lib/x86_64-linux-gnu/libgtk-3.so.0": {"libpango-1.0.so.0", "libexpat.so.1"},
        "/usr/lib/x86_64-linux-gnu/libpango-1.0.so.0": set(),
        # a package's own library nothing links to (torch loads it with ctypes): kept
        "/venv/torch/lib/libtorch_global_deps.so": set(),
    }
    binaries = [(Path(src).name, src, "BINARY") for src in links]
    kept, dropped = spec_plan.prune_orphans(binaries, needed=lambda src: links[src])
    assert sorted(d for d, _, _ in dropped) == ["libgtk-3.so.0", "libpango-1.0.so.0"]
    assert {d for d, _, _ in kept} == {
        "libQt6Gui.so.6",
        "libfontconfig.so.1",
        "libexpat.so.1",
        "libtorch_global_deps.so",
    }


@pytest.mark.skipif(shutil.which("strip") is None, reason="binutils' strip is not installed")
def test_a_stripped_copy_still_loads(tmp_path):
    import _ctypes  # an extension module of the standard library: a real shared library

    src = Path(_ctypes.__file__)
    init = "PyInit__ctypes"
    lib = tmp_path / src.name
    shutil.copy(src, lib)
    out = spec_plan.stripped_copy(lib, tmp_path / "cache")
    assert out.stat().st_size <= lib.stat().st_size
    after = subprocess.run(["readelf", "-S", str(out)], capture_output=True, text=True).stdout
    assert ".symtab" not in after and ".dynsym" in after
    assert spec_plan.stripped_copy(lib, tmp_path / "cache") == out  # made once
    # the dynamic symbols survive: the extension loads and initialises
    renamed = tmp_path / "load" / src.name
    renamed.parent.mkdir()
    shutil.copy(out, renamed)
    assert getattr(ctypes.CDLL(str(renamed)), init) is not None


def _first_load_segment(elf: bytes) -> int:
    """Offset, in the file, of the first PT_LOAD program header of a 64-bit ELF image."""
    phoff = int.from_bytes(elf[32:40], "little")
    size = int.from_bytes(elf[54:56], "little")
    for i in range(int.from_bytes(elf[56:58], "little")):
        at = phoff + i * size
        if int.from_bytes(elf[at : at + 4], "little") == 1:
            return at
    raise AssertionError("no PT_LOAD segment")


def test_misaligned_segments_are_found(tmp_path):
    import _ctypes

    good = tmp_path / "good.so"
    shutil.copy(_ctypes.__file__, good)
    assert spec_plan.load_segments_aligned(good)
    # what strip made of numpy's patchelf-rewritten OpenBLAS: p_vaddr - p_offset off the page
    elf = bytearray(good.read_bytes())
    at = _first_load_segment(bytes(elf))
    offset = int.from_bytes(elf[at + 8 : at + 16], "little")
    elf[at + 8 : at + 16] = (offset + 0x10).to_bytes(8, "little")
    bad = tmp_path / "bad.so"
    bad.write_bytes(bytes(elf))
    assert not spec_plan.load_segments_aligned(bad)
    with pytest.raises(OSError):
        ctypes.CDLL(str(bad))  # the loader refuses it the same way
    text = tmp_path / "libc.so"  # a linker script, not an ELF file: nothing to check
    text.write_text("GROUP ( /lib/libc.so.6 )\n")
    assert spec_plan.load_segments_aligned(text)


def test_a_library_strip_would_break_ships_unstripped(monkeypatch, tmp_path):
    if shutil.which("strip") is None:
        pytest.skip("binutils' strip is not installed")
    import _ctypes

    lib = tmp_path / "libx.so"
    shutil.copy(_ctypes.__file__, lib)
    monkeypatch.setattr(spec_plan, "load_segments_aligned", lambda path: Path(path) == lib)
    assert spec_plan.stripped_copy(lib, tmp_path / "cache") == lib
    assert not list((tmp_path / "cache").glob("*.tmp"))
    assert spec_plan.stripped_copy(lib, tmp_path / "cache") == lib  # remembered, not redone


def test_torchs_config_modules_keep_their_sources():
    modes = spec_plan.collection_modes()
    assert modes["torch.fx"] == "pyz" and modes["torch.fx.experimental._config"] == "pyz+py"
    torch_spec = importlib.util.find_spec("torch")
    if torch_spec is None:
        pytest.skip("torch is not installed")
    # every module of an installed torch that parses its own source on import keeps it
    root = Path(torch_spec.origin).parent
    readers = {
        ".".join(path.relative_to(root.parent).with_suffix("").parts)
        for path in root.rglob("*.py")
        if re.search(r"^install_config_module\(", path.read_text(errors="replace"), re.M)
    }
    assert "torch._dynamo.config" in readers
    for name in readers:
        bytecode_only = [p for p in spec_plan.TORCH_BYTECODE_ONLY if name.startswith(p + ".")]
        excluded = [p for p in spec_plan.TORCH_UNUSED if name == p or name.startswith(p + ".")]
        if bytecode_only and not excluded:
            assert modes.get(name) == "pyz+py", name


_IMPORTS_AT_RUN_TIME = """
import sys
import torch, torch.nn.parallel, torch.utils.data
import scipy.spatial, scipy.sparse.csgraph, scipy.ndimage
from transformers import (AutoImageProcessor, AutoModelForSemanticSegmentation,
                          DepthAnythingForDepthEstimation)
import engine.pipeline, engine.selftest, engine.models.depth_anything, engine.models.segmentation
print("\\n".join(sorted(sys.modules)))
"""


def test_what_torch_scipy_and_transformers_import_is_not_excluded():
    """The cuts inside torch, SciPy and transformers leave everything that importing them loads.

    (A subpackage excluded wrongly fails only in the frozen app, minutes into a build: torch's
    nn.parallel imports torch.distributed.algorithms, for one.)
    """
    for package in ("torch", "scipy", "transformers"):
        pytest.importorskip(package)
    installed = spec_plan.installed_subpackages("transformers", "models")
    # (whole optional packages such as tokenizers are excluded knowingly: what imports them
    # goes without them; the frozen selftest checks that)
    excluded = (
        *spec_plan.TORCH_UNUSED,
        *spec_plan.SCIPY_UNUSED,
        *spec_plan.transformers_model_excludes(installed),
    )
    loaded = subprocess.run(
        [sys.executable, "-c", _IMPORTS_AT_RUN_TIME],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    ).stdout.split()
    clashes = [m for m in loaded if m in excluded or m.startswith(tuple(e + "." for e in excluded))]
    assert not clashes


# --------------------------------------------------------------------- build.spec, executed


class _Recorder:
    """Stands in for one of PyInstaller's spec classes: records its arguments."""

    calls: list

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        type(self).calls.append(self)


def _spec_api():
    """Fresh recorder classes for Analysis, PYZ, EXE, COLLECT, BUNDLE."""
    api = {}
    for name in ("PYZ", "EXE", "COLLECT", "BUNDLE"):
        api[name] = type(name, (_Recorder,), {"calls": []})

    class Analysis(_Recorder):
        calls: list = []

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.binaries = [
                ("torch/lib/libtorch_cpu.so", "/venv/torch/lib/libtorch_cpu.so", "BINARY"),
                ("torch/lib/libtorchbind_test.so", "/venv/torch/lib/x_test.so", "BINARY"),
                ("PySide6/Qt/plugins/platforms/libqvnc.so", "/venv/vnc.so", "BINARY"),
            ]
            self.datas = [
                ("torch/include/ATen/ATen.h", "/venv/torch/include/ATen/ATen.h", "DATA"),
                ("resources/style.qss", "/src/resources/style.qss", "DATA"),
            ]
            self.pure, self.scripts = [], []

    api["Analysis"] = Analysis
    return api


def _fake_hooks(monkeypatch):
    """PyInstaller.utils.hooks as the spec uses it (PyInstaller is a dev extra, not a test one)."""
    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_dynamic_libs = lambda package: [(f"/venv/{package}.libs/x.so", package)]
    hooks.collect_submodules = lambda package: [f"{package}.sub"]
    hooks.copy_metadata = lambda dist: [(f"/venv/{dist}.dist-info", f"{dist}.dist-info")]
    hooks.collect_data_files = lambda package, excludes=(): [
        (f"/venv/{package}/data.json", f"{package}/_internals")
    ]
    package = types.ModuleType("PyInstaller")
    utils = types.ModuleType("PyInstaller.utils")
    package.utils, utils.hooks = utils, hooks
    for name, module in (
        ("PyInstaller", package),
        ("PyInstaller.utils", utils),
        ("PyInstaller.utils.hooks", hooks),
    ):
        monkeypatch.setitem(sys.modules, name, module)


def _run_spec(monkeypatch, tmp_path, platform):
    _fake_hooks(monkeypatch)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.delitem(sys.modules, "spec_plan", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    stripped = []
    real = spec_plan.stripped_copy
    monkeypatch.setattr(
        spec_plan,
        "stripped_copy",
        lambda src, cache: stripped.append(src) or Path(cache) / Path(src).name,
    )
    pruned = []  # what prune_orphans was handed: the sources as PyInstaller found them
    monkeypatch.setattr(
        spec_plan, "prune_orphans", lambda binaries: pruned.extend(binaries) or (binaries, [])
    )
    monkeypatch.setitem(sys.modules, "spec_plan", spec_plan)
    api = _spec_api()
    namespace = {**api, "SPECPATH": str(ROOT), "workpath": str(tmp_path), "__file__": "build.spec"}
    code = compile((ROOT / "build.spec").read_text(encoding="utf-8"), "build.spec", "exec")
    exec(code, namespace)  # noqa: S102 - the spec is ours; PyInstaller runs it the same way
    assert real is not None
    namespace["_pruned"] = pruned
    return api, namespace, stripped


@pytest.mark.parametrize("platform", ["linux", "win32", "darwin"])
def test_build_spec_hands_each_platforms_plan_to_pyinstaller(monkeypatch, tmp_path, platform):
    api, ns, stripped = _run_spec(monkeypatch, tmp_path, platform)
    plan = ns["PLAN"]
    assert plan.platform == platform
    (analysis,) = api["Analysis"].calls
    assert analysis.kwargs["excludes"] == list(plan.excludes)
    # the hooks' choice (bytecode and .py sources for torch and transformers) is kept, except
    # in the parts of torch that are never scripted: bytecode only there
    modes = analysis.kwargs["module_collection_mode"]
    assert modes == spec_plan.collection_modes()
    assert not {"torch", "torch.distributed", "torch.jit", "torch.nn", "transformers"} & set(modes)
    hidden = analysis.kwargs["hiddenimports"]
    assert "engine.stages._isolated" in hidden and "gui.app" in hidden
    assert "transformers.models.depth_anything.sub" in hidden
    # kernels' data (transformers loads models through it) and the metadata go in
    sources = [src for src, _dest in analysis.kwargs["datas"]]
    assert "/venv/kernels/data.json" in sources and "/venv/torch.dist-info" in sources
    # what the plan drops is out of the collected files
    dests = [d for d, _, _ in analysis.binaries + analysis.datas]
    assert "torch/lib/libtorchbind_test.so" not in dests
    assert "torch/include/ATen/ATen.h" not in dests
    assert ("PySide6/Qt/plugins/platforms/libqvnc.so" in dests) is (platform != "linux")
    assert "resources/style.qss" in dests
    exes = api["EXE"].calls
    assert [(e.kwargs["name"], e.kwargs["console"]) for e in exes] == [
        (x.name, x.console) for x in plan.executables
    ]
    for exe in exes:
        assert exe.kwargs["upx"] is False and exe.kwargs["exclude_binaries"] is True
        assert (exe.kwargs["icon"] is None) is (plan.icon is None)
        if exe.kwargs["icon"]:
            assert Path(exe.kwargs["icon"]).is_file()
    (collect,) = api["COLLECT"].calls
    assert collect.kwargs["name"] == "vitrine" and collect.args[: len(exes)] == tuple(exes)
    if platform == "linux":
        assert stripped == ["/venv/torch/lib/libtorch_cpu.so"]
        # pruning sees where each library came from (a stripped copy would hide a system one)
        assert [src for _d, src, _k in ns["_pruned"]] == ["/venv/torch/lib/libtorch_cpu.so"]
        src = dict((d, s) for d, s, _ in analysis.binaries)["torch/lib/libtorch_cpu.so"]
        assert Path(src).parent == tmp_path / "stripped"
    else:
        assert stripped == []
    if platform == "darwin":
        (bundle,) = api["BUNDLE"].calls
        assert bundle.args == (collect,) and bundle.kwargs["name"] == "Vitrine.app"
        assert Path(bundle.kwargs["icon"]).is_file()
    else:
        assert api["BUNDLE"].calls == []


def test_spec_plan_imports_without_pyinstaller(monkeypatch):
    monkeypatch.setitem(sys.modules, "PyInstaller", None)  # an import of it would fail
    spec = importlib.util.spec_from_file_location("plan_alone", ROOT / "packaging/spec_plan.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "plan_alone", module)
    spec.loader.exec_module(module)
    assert module.plan("win32").platform == "win32"
