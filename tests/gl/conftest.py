"""GL tests render with Mesa under the X display pytest-xvfb starts (Qt's ``xcb`` platform).

Qt's ``offscreen`` platform cannot create an OpenGL context, so the platform is chosen here,
before pytest-qt creates the QApplication: ``xcb`` when there is an X display, ``offscreen``
otherwise (then the GL tests skip instead of Qt aborting for want of a display). Linux only; a
platform already chosen through ``QT_QPA_PLATFORM`` is left alone.
"""

from __future__ import annotations

import os
import sys

import pytest


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    # trylast: after pytest-xvfb's pytest_configure has started Xvfb and set DISPLAY (this
    # conftest can be imported before that, when pytest is pointed at tests/gl directly)
    if sys.platform.startswith("linux") and "QT_QPA_PLATFORM" not in os.environ:
        os.environ["QT_QPA_PLATFORM"] = "xcb" if os.environ.get("DISPLAY") else "offscreen"


@pytest.fixture
def gl_required(qapp):
    """Skip unless the 3D view can render here."""
    from gui.view3d import opengl_status

    ok, reason = opengl_status()
    if not ok:
        pytest.skip(f"OpenGL unavailable: {reason} (run under Xvfb: pytest-xvfb, or xvfb-run)")
