"""The installers' recipes: the CI workflow, the Inno Setup script, and the .deb's packaging step.

The real .deb (a PyInstaller build, minutes) is installed, used and purged by bench/check_deb.sh,
run by hand; here packaging/build_deb.sh packages a tiny fake bundle, and the package is
unpacked with ``dpkg-deb -x`` into a temporary root (never installed on this machine).
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import engine

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "installers.yml"
DESKTOP = ROOT / "packaging" / "linux" / "vitrine.desktop"

needs_dpkg = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed (Debian/Ubuntu only)"
)


# ---------------------------------------------------------------------------- the version


def test_the_version_is_kept_in_engine_and_pyproject_reads_it():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "engine.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+([a-z]+\d+)?", engine.__version__)


def test_vitrine_version_prints_the_engines_version():
    out = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.strip() == f"vitrine {engine.__version__}"


def test_folders_without_a_command_are_split_off_for_the_window(tmp_path):
    import main

    a, b = tmp_path / "a", tmp_path / "b c"
    a.mkdir()
    b.mkdir()
    a, b = str(a), str(b)
    parser = main.build_parser()
    split = main._split_window_paths  # noqa: SLF001
    assert split([a, b], parser) == ([], [a, b])
    assert split(["--no-sample", a], parser) == (["--no-sample"], [a])
    assert split(["--project", "P", a], parser) == (["--project", "P"], [a])
    assert split(["reconstruct", a, "--out", "o"], parser) == (["reconstruct", a, "--out", "o"], [])
    assert split(["-v", "sample", "d"], parser) == (["-v", "sample", "d"], [])
    assert split([], parser) == ([], [])
    # a mistyped command is left to argparse, which names the commands
    assert split(["reconstrct", a], parser) == (["reconstrct", a], [])
    with pytest.raises(SystemExit):
        main.main(["reconstrct", a])


# ------------------------------------------------------------------------------ the workflow


def _workflow() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML parses the workflow")
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def _steps_text(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in job["steps"])


def test_the_workflow_builds_and_selftests_on_windows_macos_and_linux():
    flow = _workflow()
    # YAML 1.1 reads the key `on` as True
    triggers = flow.get("on", flow.get(True))
    assert "workflow_dispatch" in triggers and triggers["push"]["tags"] == ["v*"]
    jobs = flow["jobs"]
    assert jobs["windows"]["runs-on"] == "windows-latest"
    assert jobs["macos"]["runs-on"] == "macos-latest"
    for name in ("windows", "macos", "linux"):
        text = _steps_text(jobs[name])
        assert "actions/checkout@" in text and "actions/upload-artifact@" in text
        assert "download.pytorch.org/whl/cpu" in text or name == "macos"
        assert "constraints_py3.11.txt" in text
    win, mac = _steps_text(jobs["windows"]), _steps_text(jobs["macos"])
    assert "pyinstaller --noconfirm --clean build.spec" in win
    assert "vitrine.exe --selftest" in win
    assert "packaging\\windows\\vitrine.iss" in win and "/DAppVersion=" in win
    assert '$app\\vitrine.exe" --selftest' in win  # the installed copy, too
    assert "pyinstaller --noconfirm --clean build.spec" in mac
    assert "Vitrine.app/Contents/MacOS/vitrine --selftest" in mac
    assert "hdiutil create" in mac and "hdiutil attach" in mac
    assert "bench/check_deb.sh" in _steps_text(jobs["linux"])
    release = jobs["release"]
    assert set(release["needs"]) == {"windows", "macos", "linux"}
    assert release["if"].startswith("startsWith(github.ref, 'refs/tags/v')")


def test_the_files_the_workflow_names_exist():
    text = WORKFLOW.read_text(encoding="utf-8")
    for rel in (
        "build.spec",
        "packaging/windows/vitrine.iss",
        "bench/check_deb.sh",
        "resources/constraints/constraints_py3.11.txt",
    ):
        assert rel.replace("/", "\\") in text or rel in text
        assert (ROOT / rel).is_file(), rel


def test_the_inno_setup_script_points_at_real_files_and_the_windowed_exe():
    iss = (ROOT / "packaging" / "windows" / "vitrine.iss").read_text(encoding="utf-8")
    here = ROOT / "packaging" / "windows"
    for key in ("SetupIconFile", "LicenseFile"):
        value = re.search(rf"^{key}=(.+)$", iss, re.M).group(1).strip()
        assert (here / value.replace("\\", "/")).resolve().is_file(), key
    assert re.search(r"^DefaultDirName=\{autopf\}\\Vitrine$", iss, re.M)
    assert "OutputBaseFilename=vitrine-{#AppVersion}-windows-x64-setup" in iss
    # the Start-menu entry starts the windowed executable the spec plan makes on Windows
    sys.path.insert(0, str(ROOT / "packaging"))
    import spec_plan

    windowed = [e.name for e in spec_plan.plan("win32").executables if not e.console]
    assert re.search(rf'Filename: "\{{app\}}\\{windowed[0]}\.exe"', iss)
    assert 'Type: filesandordirs; Name: "{app}"' in iss
    app_id = re.search(r"^AppId=\{\{([0-9A-F-]{36})\}$", iss, re.M)
    assert app_id, "AppId must be a fixed GUID (upgrades find the installed copy by it)"


# ------------------------------------------------------------------------- the desktop entry


def _desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(DESKTOP.read_text(encoding="utf-8"))
    assert parser.sections() == ["Desktop Entry"]
    return parser["Desktop Entry"]


def test_the_desktop_entry_launches_vitrine_with_dropped_folders():
    entry = _desktop_entry()
    assert entry["Type"] == "Application"
    assert entry["Name"] == "Vitrine"
    assert entry["Exec"] == "vitrine %F"  # %F: the dropped files and folders, as paths
    assert entry["TryExec"] == "vitrine"
    assert entry["Icon"] == "vitrine"
    assert entry["Terminal"] == "false"
    assert entry["MimeType"] == "inode/directory;"
    for key in ("Categories", "Keywords", "MimeType"):
        assert entry[key].endswith(";"), key  # lists end with ';' in the spec
    assert "Graphics" in entry["Categories"].split(";")
    assert entry["Version"] == "1.4"  # the newest desktop-file-utils 0.26 knows


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="no desktop-file-utils")
def test_desktop_file_validate_accepts_the_entry():
    out = subprocess.run(["desktop-file-validate", str(DESKTOP)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


# ------------------------------------------------------------------ the .deb's packaging step


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """build_deb.sh run on a tiny fake bundle; its .deb unpacked into a temporary root."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (Debian/Ubuntu only)")
    tmp = tmp_path_factory.mktemp("deb")
    bundle = tmp / "bundle" / "vitrine"
    (bundle / "_internal" / "resources").mkdir(parents=True)
    (bundle / "vitrine").write_text('#!/bin/sh\necho "fake vitrine $*"\n')
    (bundle / "vitrine").chmod(0o755)
    (bundle / "_internal" / "resources" / "style.qss").write_text("/* style */\n")
    (bundle / "_internal" / "__pycache__").mkdir()
    (bundle / "_internal" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    env = {
        **os.environ,
        "DIST": str(tmp / "dist"),
        "WORK": str(tmp / "work"),
        "VENV": str(Path(sys.executable).parents[1]),
        "COMPRESS": "gzip",
    }
    out = subprocess.run(
        ["bash", str(ROOT / "packaging" / "build_deb.sh"), "--bundle", str(bundle)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    deb = tmp / "dist" / f"vitrine_{engine.__version__}_amd64.deb"
    tarball = tmp / "dist" / f"vitrine-{engine.__version__}-linux-x86_64.tar.gz"
    root = tmp / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    control = tmp / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    return {"deb": deb, "tarball": tarball, "root": root, "control": control, "log": out.stdout}


def test_the_deb_is_named_after_the_version_and_its_control_file_is_right(built):
    fields = {}
    for line in (built["control"] / "control").read_text().splitlines():
        if line and not line.startswith(" "):
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    assert fields["Package"] == "vitrine"
    assert fields["Version"] == engine.__version__
    assert fields["Architecture"] == "amd64"
    assert fields["Section"] == "graphics"
    assert re.fullmatch(r"\d+", fields["Installed-Size"])
    assert "@" in fields["Maintainer"]
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert re.fullmatch(r"libc6 \(>= \d+\.\d+\)", depends[0])
    assert {"libgl1", "libegl1", "libxcb-cursor0", "libxkbcommon-x11-0"} <= set(depends)
    assert fields["Description"].startswith("product photos to")
    # dpkg itself agrees that the fields are well formed
    info = subprocess.run(["dpkg-deb", "-f", str(built["deb"]), "Package", "Version"], text=True,
                          capture_output=True, check=True)  # fmt: skip
    assert info.stdout.split() == ["Package:", "vitrine", "Version:", engine.__version__]


def test_the_deb_installs_the_bundle_the_command_the_launcher_and_the_icon(built):
    root = built["root"]
    assert (root / "opt/vitrine/vitrine").is_file()
    assert os.access(root / "opt/vitrine/vitrine", os.X_OK)
    assert (root / "opt/vitrine/_internal/resources/style.qss").is_file()
    assert not list(root.rglob("__pycache__"))  # never shipped: dpkg -P would leave none
    link = root / "usr/bin/vitrine"
    assert link.is_symlink() and os.readlink(link) == "/opt/vitrine/vitrine"
    desktop = root / "usr/share/applications/vitrine.desktop"
    assert desktop.read_bytes() == DESKTOP.read_bytes()
    icon = root / "usr/share/icons/hicolor/256x256/apps/vitrine.png"
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(icon) as image:
        assert image.size == (256, 256)
    assert "MIT" in (root / "usr/share/doc/vitrine/copyright").read_text()
    # nothing but these trees: the package touches no shared file
    tops = sorted(str(p.relative_to(root)) for p in root.glob("*/*"))
    assert tops == ["opt/vitrine", "usr/bin", "usr/share"]


def test_the_maintainer_scripts_refresh_caches_and_leave_nothing_in_opt(built):
    control = built["control"]
    for name in ("postinst", "postrm"):
        script = control / name
        assert os.access(script, os.X_OK), name
        subprocess.run(["sh", "-n", str(script)], check=True)
    postinst = (control / "postinst").read_text()
    postrm = (control / "postrm").read_text()
    assert "update-desktop-database" in postinst and "gtk-update-icon-cache" in postinst
    assert "command -v update-desktop-database" in postinst  # only where the tool exists
    assert re.search(r"remove\|purge\)\s+.*rm -rf /opt/vitrine", postrm, re.S)
    # files installed with dpkg are listed in the package; the scripts write nothing else
    assert "/usr/" not in postrm.replace("/usr/share/applications", "").replace(
        "/usr/share/icons/hicolor", ""
    )


def test_the_portable_tarball_holds_the_same_bundle(built):
    listing = subprocess.run(
        ["tar", "-tzvf", str(built["tarball"])], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    names = [line.split()[-1] for line in listing]
    top = f"vitrine-{engine.__version__}/"
    assert all(name.startswith(top) for name in names)
    assert f"{top}vitrine" in names and f"{top}_internal/resources/style.qss" in names
    assert all(" root/root " in line for line in listing)


def test_bundle_sizes_groups_a_bundle_by_component(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bundle_sizes", ROOT / "bench/bundle_sizes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for rel, size in {
        "vitrine": 3000,
        "_internal/torch/lib/libtorch_cpu.so": 50_000,
        "_internal/cv2/cv2.abi3.so": 20_000,
        "_internal/opencv_python_headless.libs/libavcodec.so": 10_000,
        "_internal/libz.so.1": 5000,  # not a component's: "other"
        "_internal/PySide6/Qt/lib/libQt6Gui.so.6": 8000,
    }.items():
        path = tmp_path / "b" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\1" * size)
    sizes, files = module.component_sizes(tmp_path / "b")
    assert files["OpenCV"] == 2 and sizes["OpenCV"] >= 30_000
    assert files["torch"] == 1 and files["other"] == 1
    assert files["Qt (PySide6, shiboken6)"] == 1
    assert files["Python (libpython, stdlib, PYZ of all modules)"] == 1
    module.main([str(tmp_path / "b"), str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert "| component | before MB | files | after MB | files |" in out
    assert "| **total** |" in out
