"""The window's centre: the 3D view, its bar (cloud or mesh, the dimensions, Set scale…), a hint.

:class:`ViewPanel` puts a :class:`gui.view3d.PointCloudView` of the window's cloud and result
models under a tool bar. The bar's actions are shared with the View menu (the window adds them
there): "Point cloud" and "Mesh" switch what the view shows, and follow the view when it
switches itself (a mesh arriving); the dimensions line follows the result model's report.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QColorDialog, QLabel, QSizePolicy, QToolBar, QVBoxLayout, QWidget

from gui.models import CloudModel
from gui.results import ResultModel
from gui.view3d import PointCloudView

#: What the centre says while there is nothing to show.
DROP_HINT = (
    "Drop a folder of product photos here, paste their paths (Ctrl+V), or use "
    "File ▸ Add folder…  —  File ▸ Open sample shows a reconstruction in minutes."
)


class ViewPanel(QWidget):
    """The 3D view under its bar, with a hint above it while there is nothing to show.

    Parameters
    ----------
    cloud_model, result_model
        What the view shows (points and cameras; the mesh and the report).
    parent
        Parent widget.

    Attributes
    ----------
    view
        The 3D view.
    cloud_action, mesh_action, scale_action
        Show the cloud (Ctrl+1), show the mesh (Ctrl+2), "Set scale…" (connected by the window).
    cameras_action, point_size_actions
        Show the camera pyramids; draw points 1, 2, 3, 4 or 6 px wide (for the View menu).
    view_bar
        The bar (object name ``viewBar``); ``cloud_button``, ``mesh_button`` and
        ``scale_button`` are its buttons.
    dimensions_label
        The product's dimensions (object name ``dimensions``).
    hint
        The drop hint (object name ``dropHint``).
    """

    def __init__(
        self, cloud_model: CloudModel, result_model: ResultModel, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.result_model = result_model
        self.view = PointCloudView(cloud_model, results=result_model)
        self.view.display_changed.connect(lambda _mode: self.sync_display_controls())
        display = QActionGroup(self)
        self.cloud_action = QAction("Point c&loud", self, checkable=True, checked=True)
        self.cloud_action.setShortcut(QKeySequence("Ctrl+1"))
        self.cloud_action.setToolTip("Show the point cloud (Ctrl+1)")
        self.cloud_action.triggered.connect(lambda _c=False: self.view.set_display("cloud"))
        self.mesh_action = QAction("&Mesh", self, checkable=True)
        self.mesh_action.setShortcut(QKeySequence("Ctrl+2"))
        self.mesh_action.setToolTip("Show the mesh, once a run has built one (Ctrl+2)")
        self.mesh_action.triggered.connect(lambda _c=False: self.view.set_display("mesh"))
        for act in (self.cloud_action, self.mesh_action):
            display.addAction(act)
        self.cameras_action = QAction("Show &cameras", self, checkable=True, checked=True)
        self.cameras_action.toggled.connect(self.view.set_cameras_visible)
        sizes = QActionGroup(self)
        self.point_size_actions: list[QAction] = []
        for px in (1, 2, 3, 4, 6):
            act = QAction(f"{px} px", self, checkable=True)
            act.setChecked(px == round(self.view.point_size))
            act.triggered.connect(lambda _c=False, px=px: self.view.set_point_size(px))
            sizes.addAction(act)
            self.point_size_actions.append(act)
        self.scale_action = QAction("Set &scale…", self)
        self.scale_action.setToolTip(
            "Give a size of the product you know, or the distance between two points"
        )
        self.dimensions_label = QLabel()
        self.dimensions_label.setObjectName("dimensions")
        # may shrink below its text (the full line is in the tooltip), and fills the bar
        self.dimensions_label.setSizePolicy(
            QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred
        )
        self.dimensions_label.setMinimumWidth(10)
        self.dimensions_label.setContentsMargins(12, 0, 6, 0)
        view_bar = QToolBar("View")
        view_bar.setObjectName("viewBar")
        view_bar.setMovable(False)
        view_bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        view_bar.addAction(self.cloud_action)
        view_bar.addAction(self.mesh_action)
        view_bar.addWidget(self.dimensions_label)
        view_bar.addAction(self.scale_action)
        self.view_bar = view_bar
        self.cloud_button = view_bar.widgetForAction(self.cloud_action)
        self.mesh_button = view_bar.widgetForAction(self.mesh_action)
        self.scale_button = view_bar.widgetForAction(self.scale_action)
        result_model.report_changed.connect(self._on_report_changed)
        result_model.mesh_changed.connect(self.sync_display_controls)
        self.hint = QLabel(DROP_HINT)
        self.hint.setObjectName("dropHint")
        self.hint.setWordWrap(True)
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 0, 6)
        layout.addWidget(view_bar)
        layout.addWidget(self.hint)
        layout.addWidget(self.view, 1)

    def _on_report_changed(self) -> None:
        text = self.result_model.dimensions_text
        self.dimensions_label.setText(text)
        self.dimensions_label.setToolTip(
            "Width x depth x height of the product" if text and "No true" not in text else text
        )

    def sync_display_controls(self) -> None:
        """Check "Point cloud" or "Mesh" as the view shows; "Mesh" only when there is one."""
        has_mesh = self.result_model.mesh is not None
        mesh = has_mesh and self.view.display == "mesh"
        self.mesh_action.setEnabled(has_mesh)
        self.mesh_action.setChecked(mesh)
        self.cloud_action.setChecked(not mesh)

    def choose_background(self) -> None:
        """View ▸ Background colour…."""
        colour = QColorDialog.getColor(self.view.background, self.window(), "Background colour")
        if colour.isValid():
            self.view.set_background(colour)
