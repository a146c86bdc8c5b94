"""Interactive 3D preview: the :class:`~gui.models.CloudModel`'s points and cameras, and the mesh.

The view subscribes to the model (napari style) and never receives arrays from workers. A change
only marks the view dirty; a single-shot timer then applies the model's *latest* snapshot, so a
burst of partial clouds costs one upload per tick, not one per partial.

OpenGL comes from pyqtgraph's ``GLViewWidget`` (orbit: left drag, pan: middle drag or
Ctrl+left drag, zoom: wheel). When a full frame takes longer than the interactive budget (millions
of points on a software renderer), the view draws an evenly thinned preview of the cloud while
the user moves the camera and the full cloud once they stop.

When the :class:`~gui.results.ResultModel` holds a mesh, the view can show it instead of the
cloud (:meth:`PointCloudView.set_display`): vertex colours, smooth normals, a two-sided
headlight. Shift+click picks the point (or mesh vertex) under the cursor, in reconstruction
coordinates, for the "Set scale" dialog.

Where no OpenGL context can be created (``QT_QPA_PLATFORM=offscreen``, remote sessions, broken
drivers, ``VITRINE_NO_OPENGL=1``) the view shows a label instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from pyqtgraph import Vector
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QGuiApplication, QImage, QMatrix4x4
from PySide6.QtWidgets import QLabel, QStackedLayout, QWidget

from engine.types import CameraPose, Mesh
from gui.models import CloudModel
from gui.results import ResultModel
from gui.view3d_budget import (  # noqa: F401 - PREVIEW_MIN_POINTS: tests import it from here
    LIVE_MIN_POINTS,
    PREVIEW_MIN_POINTS,
    SETTLE_MS,
    DrawBudget,
    MovingPreview,
    moves_camera,
)
from gui.view3d_geometry import (  # noqa: F401 - the names tests and callers import from here
    FRUSTUM_FRACTION,
    MESH_DEFAULT_RGB,
    camera_up,
    display_rotation,
    frame_view,
    frustum_depth,
    frustum_segments,
    mesh_rgba,
    rgb_to_rgba_float,
    robust_bounds,
    rotation_to_z,
    vertex_normals,
)
from gui.view3d_picking import (  # noqa: F401 - the names tests and callers import from here
    PICK_RADIUS_PX,
    Markers,
    is_pick,
    pick_point,
    project_to_screen,
    qmatrix_to_numpy,
    world_to_clip,
)

if TYPE_CHECKING:
    from pyqtgraph.opengl import GLLinePlotItem

logger = logging.getLogger(__name__)

#: Qt platform plugins that never provide an OpenGL context for widgets.
_NO_GL_PLATFORMS = {"offscreen", "minimal"}
#: How the view can show the result.
DISPLAY_MODES = ("cloud", "mesh")

_gl_status: tuple[bool, str] | None = None


def opengl_status() -> tuple[bool, str]:
    """Whether the 3D view can use OpenGL here, and why not.

    Needs a ``QGuiApplication``; the answer is cached once one exists (the platform plugin is
    fixed for the life of the process).

    Returns
    -------
    tuple of (bool, str)
        ``(True, "")`` when an OpenGL >= 2.1 context can be created and made current, else
        ``(False, reason)`` with the reason in plain words.
    """
    global _gl_status
    if _gl_status is not None:
        return _gl_status
    if QGuiApplication.instance() is None:
        return False, "no Qt application is running"
    _gl_status = _probe_opengl()
    if not _gl_status[0]:
        logger.info("3D preview disabled: %s", _gl_status[1])
    return _gl_status


def opengl_available() -> bool:
    """True when the 3D view can render with OpenGL (see :func:`opengl_status`)."""
    return opengl_status()[0]


def _probe_opengl() -> tuple[bool, str]:
    if os.environ.get("VITRINE_NO_OPENGL", "").strip() not in ("", "0"):
        return False, "disabled by VITRINE_NO_OPENGL"
    platform = QGuiApplication.platformName()
    if platform in _NO_GL_PLATFORMS:
        return False, f"the Qt platform {platform!r} has no OpenGL"
    try:
        import pyqtgraph.opengl  # noqa: F401
        from PySide6.QtGui import QOffscreenSurface, QOpenGLContext
    except Exception as exc:  # ImportError, or PyOpenGL failing to load libGL
        return False, f"pyqtgraph.opengl could not be imported: {exc}"
    # Creating the context up front is the reliable test: QOpenGLWidget only prints a warning
    # and shows a black rectangle when it cannot get one.
    context = QOpenGLContext()
    if not context.create():
        return False, f"no OpenGL context could be created on the {platform!r} platform"
    surface = QOffscreenSurface()
    surface.setFormat(context.format())
    surface.create()
    try:
        if not context.makeCurrent(surface):
            return False, "the OpenGL context could not be made current"
        version = context.format().version()
        if not context.isOpenGLES() and version < (2, 1):
            return False, f"OpenGL {version[0]}.{version[1]} found, 2.1 or later needed"
    finally:
        context.doneCurrent()
        surface.destroy()
    return True, ""


def _to_qcolor(color: QColor | tuple | str) -> QColor:
    if isinstance(color, QColor):
        return QColor(color)
    if isinstance(color, str):
        return QColor(color)
    values = [int(c) for c in color]
    if len(values) not in (3, 4):
        raise ValueError(f"a colour needs 3 or 4 components, got {color!r}")
    return QColor(*values)


def _matrix4(rotation: np.ndarray) -> QMatrix4x4:
    m = np.eye(4)
    m[:3, :3] = rotation
    return QMatrix4x4(*m.ravel().tolist())  # row-major, as QMatrix4x4 takes it


_gl_classes: dict[str, type] = {}


def _gl_class(name: str) -> type:
    """The view and item subclasses, created on first use (pyqtgraph.opengl imports PyOpenGL)."""
    if not _gl_classes:
        _gl_classes.update(_define_gl_classes())
    return _gl_classes[name]


def _define_gl_classes() -> dict[str, type]:
    import pyqtgraph.opengl as gl
    from PySide6.QtOpenGL import QOpenGLBuffer

    class GuardedGLView(gl.GLViewWidget):
        """GLViewWidget that reports GL failures and keeps shader programs per context.

        pyqtgraph caches each item class's shader program in a class attribute, valid only in
        the context that compiled it: a second view, or this one moved to another window (a
        floating dock: Qt recreates the context), would draw with a dead program.
        """

        def __init__(self, parent: QWidget | None, on_error: Callable[[str], None]) -> None:
            super().__init__(parent)
            self.gl_error: str | None = None
            self.programs: dict[type, int] = {}
            self.paint_started: float | None = None
            self.paint_uploaded = False
            self._on_error = on_error

        def initializeGL(self) -> None:
            self.programs.clear()  # a new context: programs and buffers must be made again
            for item in self.items:
                if isinstance(item, _ContextAware):
                    item.context_changed()
            try:
                super().initializeGL()
                # Compile the shaders now, when the window appears, not in the middle of a
                # run when the first cloud arrives (about 70 ms with llvmpipe)
                for item in self.items:
                    if isinstance(item, _ContextAware):
                        item.getShaderProgram()
            except Exception as exc:  # a virtual called by Qt: raising would only print
                self.gl_error = f"{type(exc).__name__}: {exc}"
                logger.warning("OpenGL initialisation failed: %s", self.gl_error)
                QTimer.singleShot(0, lambda: self._on_error(self.gl_error))

        def paintGL(self) -> None:
            if self.gl_error is not None:
                return
            # Timed until frameSwapped; frames that upload buffers are not typical frames
            self.paint_started = time.perf_counter()
            self.paint_uploaded = any(
                i.visible() and getattr(i, "dirty_bits", 0) for i in self.items
            )
            super().paintGL()

    class _ContextAware:
        """Mixin for pyqtgraph items: per-view shader programs, re-upload on a new context."""

        _base: type

        def getShaderProgram(self) -> int:
            view = self.view()
            programs = view.programs if isinstance(view, GuardedGLView) else {}
            program = programs.get(self._base)
            if program is None:
                saved = self._base._shaderProgram
                self._base._shaderProgram = None  # make pyqtgraph compile in this context
                try:
                    program = self._base.getShaderProgram()
                finally:
                    self._base._shaderProgram = saved
                programs[self._base] = program
            return program

        def context_changed(self) -> None:
            """Forget buffers of the old context and upload the arrays again at next paint."""
            buffer_type = QOpenGLBuffer.Type.VertexBuffer
            flags = type(self.dirty_bits)
            bits = flags(0)
            for flag, attr in (("POSITION", "pos"), ("COLOR", "color"), ("SIZE", "size")):
                vbo_attr = f"m_vbo_{attr.replace('pos', 'position')}"
                if hasattr(self, vbo_attr):
                    setattr(self, vbo_attr, QOpenGLBuffer(buffer_type))
                if flag in flags.__members__ and isinstance(getattr(self, attr, None), np.ndarray):
                    bits |= flags[flag]
            self.dirty_bits = bits

    class Points(_ContextAware, gl.GLScatterPlotItem):
        _base = gl.GLScatterPlotItem

    class Lines(_ContextAware, gl.GLLinePlotItem):
        _base = gl.GLLinePlotItem

    from pyqtgraph.opengl import shaders
    from pyqtgraph.opengl.items.GLMeshItem import DirtyFlag

    all_bits = DirtyFlag.POSITION | DirtyFlag.NORMAL | DirtyFlag.COLOR | DirtyFlag.FACES

    class MeshItem(_ContextAware, gl.GLMeshItem):
        """Triangle mesh with vertex colours and a two-sided headlight; arrays set directly.

        pyqtgraph's ``MeshData`` computes vertex normals in a Python loop (seconds for a web
        mesh): the arrays are prepared with numpy and handed to the buffers as they are. The
        shader program is this item's own, so it lives in this view's context.
        """

        def __init__(self) -> None:
            super().__init__(glOptions="opaque", smooth=True)
            self._program = shaders.ShaderProgram(
                "vitrine-headlight",
                [shaders.VertexShader(_MESH_VERTEX_SHADER), shaders.FragmentShader(_MESH_SHADER)],
            )
            self.setShader(self._program)
            self.dirty_bits = DirtyFlag(0)

        def set_arrays(
            self, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, normals: np.ndarray
        ) -> None:
            self.vertexes = np.ascontiguousarray(vertices, dtype=np.float32)
            self.normals = np.ascontiguousarray(normals, dtype=np.float32)
            self.colors = np.ascontiguousarray(colors, dtype=np.uint8)
            self.faces = np.ascontiguousarray(faces, dtype=np.uint32)
            self.dirty_bits = all_bits
            self.update()

        def parseMeshData(self) -> DirtyFlag:
            bits, self.dirty_bits = self.dirty_bits, DirtyFlag(0)
            return bits

        def getShaderProgram(self) -> int:
            context = _current_context()
            es2 = bool(context is not None and context.hasExtension(b"GL_ARB_ES2_compatibility"))
            return self._program.program(es2_compat=es2)

        def context_changed(self) -> None:
            self._program.prog = None
            buffer_types = {
                "m_vbo_position": QOpenGLBuffer.Type.VertexBuffer,
                "m_vbo_normal": QOpenGLBuffer.Type.VertexBuffer,
                "m_vbo_color": QOpenGLBuffer.Type.VertexBuffer,
                "m_ibo_faces": QOpenGLBuffer.Type.IndexBuffer,
            }
            for attr, kind in buffer_types.items():
                setattr(self, attr, QOpenGLBuffer(kind))
            self.dirty_bits = all_bits if self.vertexes is not None else DirtyFlag(0)

    return {"view": GuardedGLView, "points": Points, "lines": Lines, "mesh": MeshItem}


def _lines(color: tuple, width: float, options: str | dict) -> Any:
    """An empty line-segment item (``mode='lines'``: consecutive vertex pairs)."""
    return _gl_class("lines")(
        pos=np.zeros((0, 3), np.float32),
        color=color,
        width=width,
        mode="lines",
        antialias=False,
        glOptions=options,
    )


def _make_items(point_size: float) -> tuple:
    """The view's items: cloud, preview, camera pyramids, mesh, marker dots, marker line."""
    # 'opaque': depth test, no blending (the default 'additive' washes colours out to white).
    # Hidden while empty: nothing to draw, and no zero-byte buffer to upload.
    points, preview = (
        _gl_class("points")(
            pos=np.zeros((0, 3), np.float32),
            color=(1.0, 1.0, 1.0, 1.0),
            size=point_size,
            pxMode=True,
            glOptions="opaque",
        )
        for _ in range(2)
    )
    frustums = _lines((1.0, 0.75, 0.2, 1.0), 1.0, "opaque")
    mesh = _gl_class("mesh")()
    # Picked points stay visible through the surface: no depth test, drawn last
    from OpenGL import GL

    on_top = {GL.GL_DEPTH_TEST: False, GL.GL_BLEND: False, GL.GL_CULL_FACE: False}
    markers = _gl_class("points")(
        pos=np.zeros((0, 3), np.float32),
        color=(1.0, 0.85, 0.1, 1.0),
        size=12.0,
        pxMode=True,
        glOptions=on_top,
    )
    marker_line = _lines((1.0, 0.85, 0.1, 1.0), 2.0, on_top)
    markers.setDepthValue(10)
    marker_line.setDepthValue(10)
    return points, preview, frustums, mesh, markers, marker_line


def _current_context():  # noqa: ANN202 - QOpenGLContext or None
    from PySide6.QtGui import QOpenGLContext

    return QOpenGLContext.currentContext()


_MESH_VERTEX_SHADER = """
    uniform mat4 u_mvp;
    uniform mat3 u_normal;
    attribute vec4 a_position;
    attribute vec3 a_normal;
    attribute vec4 a_color;
    varying vec4 v_color;
    varying vec3 v_normal;
    void main() {
        v_normal = normalize(u_normal * a_normal);
        v_color = a_color;
        gl_Position = u_mvp * a_position;
    }
"""
# Two-sided: a reconstructed surface's triangles are not reliably wound outwards.
_MESH_SHADER = """
    #ifdef GL_ES
    precision mediump float;
    #endif
    varying vec4 v_color;
    varying vec3 v_normal;
    void main() {
        vec3 n = normalize(v_normal);
        float key = abs(dot(n, normalize(vec3(0.35, 0.5, 1.0))));
        float fill = abs(n.z);
        float light = min(0.3 + 0.55 * key + 0.2 * fill, 1.0);
        gl_FragColor = vec4(v_color.rgb * light, v_color.a);
    }
"""


class _Scene:
    """The items the GL view draws: the cloud, its moving preview, camera pyramids, mesh, markers.

    Uploads arrays to them and shows or hides them; the view decides what and when.
    """

    def __init__(self, view: QWidget, point_size: float) -> None:
        self.points, self.preview, self.frustums, self.mesh, *markers = _make_items(point_size)
        self.markers = tuple(markers)
        for item in self.items:
            item.setVisible(False)
            view.addItem(item)

    @property
    def items(self) -> tuple:
        """All items, in drawing order."""
        return (self.points, self.preview, self.frustums, self.mesh, *self.markers)

    def set_transform(self, matrix: QMatrix4x4) -> None:
        """Place every item by ``matrix`` (reconstruction to display frame)."""
        for item in self.items:
            item.setTransform(matrix)

    def set_point_size(self, px: float) -> None:
        """Draw the cloud and its preview ``px`` pixels wide."""
        self.points.setData(size=px)
        self.preview.setData(size=px)

    def show(self, points: bool, preview: bool, mesh: bool) -> None:
        """Show or hide the cloud, its preview and the mesh."""
        self.mesh.setVisible(mesh)
        self.preview.setVisible(preview)
        self.points.setVisible(points)

    def upload_cloud(self, xyz: np.ndarray, rgb: np.ndarray, size: float) -> np.ndarray | None:
        """Upload the cloud (hidden when empty); returns its robust box (None when empty)."""
        if len(xyz) == 0:
            self.points.setVisible(False)
            return None
        self.points.setData(
            pos=np.ascontiguousarray(xyz, dtype=np.float32),
            color=rgb_to_rgba_float(rgb),
            size=size,
        )
        return robust_bounds(xyz)

    def upload_mesh(self, mesh: Mesh | None) -> tuple[int, np.ndarray | None]:
        """Upload the mesh; returns ``(triangles, box)``, ``(0, None)`` for no or an empty mesh."""
        if mesh is None or len(mesh) == 0 or mesh.num_triangles == 0:
            return 0, None
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        faces = np.asarray(mesh.faces, dtype=np.int64)
        normals = vertex_normals(vertices, faces)
        self.mesh.set_arrays(vertices, faces, mesh_rgba(mesh), normals)
        return len(faces), robust_bounds(vertices, 0.0, 100.0)

    def upload_cameras(self, cameras: list[CameraPose], bounds: np.ndarray | None, visible: bool):
        """Build a pyramid per camera, sized to the scene (``bounds``: the cloud's box)."""
        if not cameras:
            self.frustums.setVisible(False)
            return
        self.frustums.setData(pos=frustum_segments(cameras, frustum_depth(cameras, bounds)))
        self.frustums.setVisible(visible)


class PointCloudView(QWidget):
    """3D view of a :class:`CloudModel`'s points and cameras, and of a mesh, throttled redraws.

    Parameters
    ----------
    model
        The model to show; the view subscribes to ``changed`` and ``cameras_changed``.
    parent
        Parent widget.
    results
        Holds the mesh to show (the view subscribes to ``mesh_changed``); None: no mesh.
    max_draw_points
        At most this many points are uploaded (uniform decimation with a fixed seed).
    point_size
        Point diameter in screen pixels.
    background
        Background colour (QColor, ``(r, g, b)`` 0-255 or a colour name).
    throttle_ms
        Shortest interval between two uploads of the model's snapshot.
    interactive_frame_ms
        Frame-time budget while the camera moves: when the last full frame took longer, an
        evenly thinned preview (every k-th point, at least 50,000) is drawn until the user stops.

    Signals
    -------
    point_picked(object)
        Shift+click picked a point: its ``(3,)`` float64 reconstruction coordinates.
    display_changed(str)
        The view switched between ``"cloud"`` and ``"mesh"``.

    Notes
    -----
    The first non-empty snapshot fits the view (:meth:`reset_view`); later snapshots keep the
    user's orbit, zoom and pan. Clearing the model arms the automatic fit again.
    """

    point_picked = Signal(object)
    display_changed = Signal(str)

    def __init__(
        self,
        model: CloudModel,
        parent: QWidget | None = None,
        *,
        results: ResultModel | None = None,
        max_draw_points: int = 3_000_000,
        point_size: float = 2.0,
        background: QColor | tuple | str = (24, 24, 28),
        throttle_ms: int = 100,
        interactive_frame_ms: float = 50.0,
    ) -> None:
        super().__init__(parent)
        self._model = model
        self._budget = DrawBudget(max_draw_points, interactive_frame_ms)
        self._point_size = float(point_size)
        self._background = _to_qcolor(background)
        self._cameras_visible = True
        self._redraws = 0
        self._point_count = 0
        self._cloud_dirty = False
        self._cameras_dirty = False
        self._needs_reset = True
        self._bounds: np.ndarray | None = None  # robust box of the drawn points, world frame
        self._frustum_count = 0
        self._results = results
        self._display = "cloud"
        self._mesh_dirty = False
        self._mesh_triangles = 0
        self._mesh_bounds: np.ndarray | None = None
        self._markers = Markers()

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(throttle_ms))
        self._timer.timeout.connect(self._apply_pending)
        self._preview = MovingPreview(self._budget, SETTLE_MS, self)
        self._preview.ended.connect(self._end_preview)

        self._stack = QStackedLayout(self)
        self._stack.setContentsMargins(0, 0, 0, 0)
        self._label = QLabel(self)
        self._label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._label.setWordWrap(True)
        self._stack.addWidget(self._label)
        self._view = None
        self._scene: _Scene | None = None
        self._unavailable_reason = ""

        ok, reason = opengl_status()
        if ok:
            try:
                self._build_gl()
            except Exception as exc:
                logger.warning("3D view could not be built", exc_info=True)
                ok, reason = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            self._fall_back(reason)

        model.changed.connect(self._on_model_changed)
        model.cameras_changed.connect(self._on_cameras_changed)
        if results is not None:
            results.mesh_changed.connect(self._on_mesh_changed)
            self._mesh_dirty = results.mesh is not None
        if len(model) or model.cameras or self._mesh_dirty:
            self._cloud_dirty = self._cameras_dirty = True
            self._timer.start()

    # -- construction

    def _build_gl(self) -> None:
        view = _gl_class("view")(self, self._fall_back)
        view.setBackgroundColor(self._background)
        scene = _Scene(view, self._point_size)
        view.installEventFilter(self)
        view.frameSwapped.connect(self._on_frame_swapped)
        self._view, self._scene = view, scene
        self._markers.attach(*scene.markers)
        self._preview.attach(scene.points, scene.preview)
        self._stack.addWidget(view)
        self._stack.setCurrentWidget(view)

    def _fall_back(self, reason: str) -> None:
        """Show the explanatory label instead of the GL view (at start or after a GL failure)."""
        self._unavailable_reason = reason
        if self._view is not None:
            self._stack.removeWidget(self._view)
            self._view.hide()
            self._view.deleteLater()
            self._view = self._scene = None
            self._markers.attach(None, None)
            self._preview.attach(None, None)
            self._point_count = 0
        self._update_label()
        self._stack.setCurrentWidget(self._label)

    def _update_label(self) -> None:
        text = f"3D preview unavailable: OpenGL could not start ({self._unavailable_reason})."
        n_points, n_cams = len(self._model), len(self._model.cameras)
        if n_points or n_cams:
            text += f"\n{n_points:,} points, {n_cams} cameras."
        mesh = self._results.mesh if self._results is not None else None
        if mesh is not None:
            text += f"\nMesh: {mesh.num_triangles:,} triangles."
        self._label.setText(text)

    # -- public API

    @property
    def available(self) -> bool:
        """True when the OpenGL view is in use (False: the fallback label is shown)."""
        return self._view is not None

    @property
    def unavailable_reason(self) -> str:
        """Why OpenGL is not in use ("" when it is)."""
        return "" if self.available else self._unavailable_reason

    @property
    def fallback_label(self) -> QLabel:
        """The label shown instead of the 3D view when OpenGL is unavailable."""
        return self._label

    @property
    def gl_view(self) -> QWidget | None:
        """The underlying ``pyqtgraph.opengl.GLViewWidget`` (None without OpenGL)."""
        return self._view

    @property
    def frustum_item(self) -> GLLinePlotItem | None:
        """The camera pyramids' ``GLLinePlotItem`` (None without OpenGL)."""
        return self._scene.frustums if self._scene is not None else None

    @property
    def frustum_count(self) -> int:
        """Number of camera pyramids currently built."""
        return self._frustum_count

    @property
    def point_count(self) -> int:
        """Number of points currently uploaded to the view (after decimation)."""
        return self._point_count

    @property
    def mesh_item(self) -> QObject | None:
        """The mesh's ``GLMeshItem`` (None without OpenGL)."""
        return self._scene.mesh if self._scene is not None else None

    @property
    def points_item(self) -> QObject | None:
        """The cloud's ``GLScatterPlotItem`` (None without OpenGL)."""
        return self._scene.points if self._scene is not None else None

    @property
    def mesh_triangles(self) -> int:
        """Triangles of the mesh uploaded to the view (0: none)."""
        return self._mesh_triangles

    @property
    def has_mesh(self) -> bool:
        """Whether the result model holds a mesh to show."""
        return self._results is not None and self._results.mesh is not None

    @property
    def display(self) -> str:
        """What is shown: ``"cloud"`` or ``"mesh"`` (a mesh only when there is one)."""
        return self._display

    def set_display(self, mode: str) -> None:
        """Show the point cloud (``"cloud"``) or the mesh (``"mesh"``).

        The choice is kept when there is no mesh yet: the mesh then shows as soon as it
        arrives.

        Raises
        ------
        ValueError
            For another mode.
        """
        if mode not in DISPLAY_MODES:
            raise ValueError(f"display mode must be one of {DISPLAY_MODES}, got {mode!r}")
        if mode == self._display:
            return
        self._display = mode
        self.flush()
        self._end_preview()
        self._update_visibility()
        self.display_changed.emit(mode)

    def mesh_shown(self) -> bool:
        """True when the mesh is drawn (mesh mode and a mesh uploaded)."""
        return self._display == "mesh" and self._mesh_triangles > 0

    def set_marked_points(self, points: list | np.ndarray) -> None:
        """Mark up to two picked points (reconstruction coordinates), joined by a line."""
        self._markers.set(points)

    @property
    def marked_points(self) -> np.ndarray:
        """The marked points, ``(K, 3)``."""
        return self._markers.points

    def world_to_clip(self) -> np.ndarray | None:
        """The current ``(4, 4)`` row-major matrix from reconstruction to clip coordinates."""
        if self._view is None:
            return None
        return world_to_clip(self._view, self._scene.points.transform())

    def pick(self, x: float, y: float, radius_px: float = PICK_RADIUS_PX) -> np.ndarray | None:
        """The point under ``(x, y)`` (widget pixels), or None when nothing is near it.

        Picks among the mesh's vertices when the mesh is shown, else among the cloud's points
        (all of them, not only those drawn). None too without OpenGL.
        """
        mvp = self.world_to_clip()
        if mvp is None:
            return None
        if self.mesh_shown():
            points = np.asarray(self._results.mesh.vertices, dtype=np.float64)
        else:
            points = self._model.snapshot().xyz
        index = pick_point(
            points, mvp, (self._view.width(), self._view.height()), (x, y), radius_px
        )
        return None if index is None else np.asarray(points[index], dtype=np.float64)

    @property
    def redraws(self) -> int:
        """How many snapshots of the model's cloud the view has applied so far."""
        return self._redraws

    @property
    def last_frame_points(self) -> int:
        """Points drawn in the last frame shown (fewer than :attr:`point_count` in a preview)."""
        return self._budget.last_frame_points

    @property
    def preview_active(self) -> bool:
        """True while the thinned preview is drawn because the camera is moving."""
        return self._budget.preview_active

    @property
    def full_frame_ms(self) -> float | None:
        """Estimated full-detail frame time from the last one measured (None before any)."""
        return self._budget.full_frame_ms(self._point_count)

    def live_budget(self, frame_ms: float = 40.0, floor: int = LIVE_MIN_POINTS) -> int:
        """Points that fit a ``frame_ms`` frame in a run (see :meth:`DrawBudget.live_budget`)."""
        return self._budget.live_budget(frame_ms, floor)

    @property
    def max_draw_points(self) -> int:
        """Most points drawn; larger snapshots are decimated uniformly (fixed seed)."""
        return self._budget.max_draw_points

    @max_draw_points.setter
    def max_draw_points(self, value: int) -> None:
        self._budget.max_draw_points = value
        self._on_model_changed()

    @property
    def point_size(self) -> float:
        """Point diameter in screen pixels."""
        return self._point_size

    def set_point_size(self, px: float) -> None:
        """Draw points ``px`` screen pixels wide."""
        if px <= 0:
            raise ValueError(f"point size must be positive, got {px}")
        self._point_size = float(px)
        if self._scene is not None:
            self._scene.set_point_size(self._point_size)

    @property
    def background(self) -> QColor:
        """Background colour."""
        return QColor(self._background)

    def set_background(self, color: QColor | tuple | str) -> None:
        """Set the background colour: a QColor, ``(r, g, b[, a])`` in 0-255, or a colour name."""
        self._background = _to_qcolor(color)
        if self._view is not None:
            self._view.setBackgroundColor(self._background)

    @property
    def cameras_visible(self) -> bool:
        """Whether camera pyramids are shown."""
        return self._cameras_visible

    def set_cameras_visible(self, visible: bool) -> None:
        """Show or hide the camera pyramids."""
        self._cameras_visible = bool(visible)
        if self._scene is not None:
            self._scene.frustums.setVisible(self._cameras_visible and self._frustum_count > 0)

    def flush(self) -> None:
        """Apply a pending model change now instead of at the next timer tick."""
        if self._cloud_dirty or self._cameras_dirty or self._mesh_dirty:
            self._timer.stop()
            self._apply_pending()

    def reset_view(self) -> None:
        """Fit the view to the cloud's robust bounding box, "up" from the cameras.

        With cameras, the scene is turned so that the cameras' mean up direction points up on
        screen and the view looks from the side of the first camera by name; without, the
        world's +z is up. The mesh's box is used while the mesh is shown.
        """
        self.flush()
        if self._view is None:
            return
        by_name = self._model.cameras
        cams = [by_name[k] for k in sorted(by_name)]  # the same first camera after a resume
        rotation = display_rotation(cams)
        self._scene.set_transform(_matrix4(rotation))  # world -> display, where +z is up
        bounds = self._mesh_bounds if self.mesh_shown() or self._bounds is None else self._bounds
        size = (self._view.width(), self._view.height())
        framing = frame_view(rotation, cams, bounds, self._view.opts["fov"], size)
        if framing is None:
            return
        centre, distance, elevation, azimuth = framing
        self._view.setCameraPosition(
            pos=Vector(*centre), distance=distance, elevation=elevation, azimuth=azimuth
        )
        self._needs_reset = False

    def note_interaction(self) -> None:
        """The camera is moving: draw the thinned preview until it has been still for 300 ms.

        Called on mouse, wheel and key events over the view; call it too when moving the
        camera from code (a turntable animation). Does nothing while full frames fit the
        ``interactive_frame_ms`` budget.
        """
        if self._view is None or self.mesh_shown():
            return
        self._preview.moved(self._point_count)

    def grab_frame(self) -> QImage:
        """Render the view now and return the frame (the fallback label's pixels without GL)."""
        if self._view is None:
            return self.grab().toImage()
        return self._view.grabFramebuffer()

    # -- interaction preview

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Start the preview on camera-moving input over the GL view (the view still gets it)."""
        if watched is self._view and is_pick(event):
            point = self.pick(event.position().x(), event.position().y())
            if point is not None:
                self.point_picked.emit(point)
            return True  # a pick, not the start of an orbit
        if watched is self._view and moves_camera(event):
            self.note_interaction()
        return super().eventFilter(watched, event)

    def _end_preview(self) -> None:
        if not self._budget.preview_active or self._view is None:
            return
        self._budget.preview_active = False
        self._update_visibility()
        self._view.update()

    def _on_frame_swapped(self) -> None:
        view = self._view
        if view is None or view.paint_started is None:
            return
        seconds = time.perf_counter() - view.paint_started
        view.paint_started = None
        self._preview.frame_shown(seconds, self._point_count, view.paint_uploaded)

    # -- model subscription

    def _on_model_changed(self) -> None:
        self._cloud_dirty = True
        if not self._timer.isActive():
            self._timer.start()

    def _on_mesh_changed(self) -> None:
        self._mesh_dirty = True
        if not self._timer.isActive():
            self._timer.start()

    def _on_cameras_changed(self) -> None:
        self._cameras_dirty = True
        if not self._timer.isActive():
            self._timer.start()

    def _apply_pending(self) -> None:
        cloud_dirty, cameras_dirty = self._cloud_dirty, self._cameras_dirty
        mesh_dirty = self._mesh_dirty
        self._cloud_dirty = self._cameras_dirty = self._mesh_dirty = False
        if self._view is None:
            self._update_label()
            return
        if mesh_dirty:
            self._apply_mesh()
        if cloud_dirty:
            self._apply_cloud()
        if cloud_dirty or cameras_dirty or mesh_dirty:
            self._apply_cameras()  # pyramid size follows the scene's extent
        if self._needs_reset and (self._point_count or self.mesh_shown()):
            self.reset_view()

    def _update_visibility(self) -> None:
        if self._scene is None:
            return
        mesh, preview = self.mesh_shown(), self._budget.preview_active
        cloud = self._point_count > 0 and not mesh and not preview
        self._scene.show(cloud, preview and not mesh, mesh)

    def _apply_mesh(self) -> None:
        mesh = self._results.mesh if self._results is not None else None
        self._mesh_triangles, self._mesh_bounds = self._scene.upload_mesh(mesh)
        if self._mesh_triangles and self._point_count == 0 and self._display == "mesh":
            self._needs_reset = True
        self._update_visibility()

    def _apply_cloud(self) -> None:
        snap = self._model.snapshot()
        xyz, rgb = self._budget.decimate(snap.xyz, snap.rgb)
        self._budget.preview_stride = 0
        self._bounds = self._scene.upload_cloud(xyz, rgb, self._point_size)
        if self._bounds is None:
            self._needs_reset = True
        self._point_count = len(xyz)
        self._redraws += 1
        self._update_visibility()
        if self._budget.preview_active:
            self._preview.show(self._point_count)  # still moving: thin the new cloud too

    def _apply_cameras(self) -> None:
        by_name = self._model.cameras  # a copy per access: read once
        cams = [by_name[k] for k in sorted(by_name)]
        self._frustum_count = len(cams)
        self._scene.upload_cameras(cams, self._bounds, self._cameras_visible)
