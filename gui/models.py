"""Qt-side models the widgets subscribe to (napari style: widgets take a model, never arrays).

:class:`CloudModel` holds what the 3D view shows: one base cloud (the finished sparse or dense
cloud) plus partial clouds accumulated while a stage computes (mapper snapshots replace, fused
views add), and the cameras. It only stores immutable snapshots and emits ``changed``; the view
throttles its redraws.

:class:`ProgressModel` holds the run's per-stage progress, elapsed time and time-left estimate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal

from engine.types import CameraPose, PointCloud

#: Stages of a run, in order, with a rough share of the run's time (for the overall estimate).
STAGE_WEIGHTS = {
    "ingest": 0.04,
    "masks": 0.04,
    "sfm": 0.35,
    "dense": 0.35,
    "depth_prior": 0.06,
    "fuse": 0.06,
    "mesh": 0.06,
    "scale": 0.02,
    "export": 0.02,
}
#: Quick steps shown as part of a neighbouring stage: the photo checks with reading the photos,
#: the coverage map with the scale.
STAGE_ALIASES = {"preflight": "ingest", "coverage": "scale"}


class CloudModel(QObject):
    """The cloud and cameras on show, as immutable snapshots.

    Signals
    -------
    changed
        Emitted after any change; read :meth:`snapshot` to get the current cloud.
    cameras_changed
        Emitted when the cameras change.
    """

    changed = Signal()
    cameras_changed = Signal()

    def __init__(self, max_points: int = 3_000_000, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.max_points = max_points
        self._base = PointCloud.empty()
        self._parts: list[PointCloud] = []
        self._part_points = 0
        self._cameras: dict[str, CameraPose] = {}
        self._snapshot: PointCloud | None = self._base
        self.kind = "none"
        self.version = 0

    # -- writers (GUI thread only: workers hand snapshots over through signals)

    def set_cloud(
        self,
        cloud: PointCloud,
        cameras: dict[str, CameraPose] | None = None,
        kind: str = "cloud",
    ) -> None:
        """Replace everything shown by ``cloud`` (and ``cameras`` when given)."""
        self._base = cloud
        self._parts = []
        self._part_points = 0
        self.kind = kind
        self._touch()
        if cameras is not None:
            self.set_cameras(cameras)

    def add_partial(self, cloud: PointCloud) -> None:
        """Add a partial result (for example one fused view's points) to what is shown."""
        if len(cloud) == 0:
            return
        self._parts.append(cloud)
        self._part_points += len(cloud)
        self.kind = "partial"
        self._touch()

    def set_cameras(self, cameras: dict[str, CameraPose]) -> None:
        """Replace the cameras shown."""
        self._cameras = dict(cameras)
        self.cameras_changed.emit()

    def clear(self) -> None:
        """Show nothing."""
        self.set_cloud(PointCloud.empty(), {}, "none")

    # -- readers

    @property
    def cameras(self) -> dict[str, CameraPose]:
        """Cameras on show."""
        return dict(self._cameras)

    def __len__(self) -> int:
        return len(self._base) + self._part_points

    def snapshot(self) -> PointCloud:
        """Everything on show as one cloud, capped at ``max_points`` (uniformly decimated)."""
        if self._snapshot is None:
            clouds = [c for c in (self._base, *self._parts) if len(c)]
            if not clouds:
                merged = PointCloud.empty()
            elif len(clouds) == 1:
                merged = clouds[0]
            else:
                merged = PointCloud(
                    np.concatenate([c.xyz for c in clouds]).astype(np.float32, copy=False),
                    np.concatenate([c.rgb for c in clouds]).astype(np.uint8, copy=False),
                )
            if len(merged) > self.max_points:
                idx = np.random.default_rng(0).choice(len(merged), self.max_points, replace=False)
                idx.sort()
                merged = PointCloud(merged.xyz[idx], merged.rgb[idx])
            self._snapshot = merged
        return self._snapshot

    def _touch(self) -> None:
        self._snapshot = None
        self.version += 1
        self.changed.emit()


@dataclass
class StageProgress:
    """One stage's progress as last reported."""

    name: str
    current: int = 0
    total: int = 0
    message: str = ""
    started: float | None = None
    finished: float | None = None

    @property
    def fraction(self) -> float:
        """Fraction done in [0, 1] (1 once finished; 0 while the total is unknown)."""
        if self.finished is not None:
            return 1.0
        if self.total <= 0:
            return 0.0
        return min(1.0, self.current / self.total)


class ProgressModel(QObject):
    """Per-stage progress of the current run, elapsed time and an estimate of time left.

    Signals
    -------
    changed
        Emitted on every update.
    """

    changed = Signal()

    def __init__(self, parent: QObject | None = None, clock=time.monotonic) -> None:  # noqa: ANN001
        super().__init__(parent)
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget the last run."""
        self.stages = {name: StageProgress(name) for name in STAGE_WEIGHTS}
        self.current: str | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self.changed.emit()

    def start(self) -> None:
        """A run starts now."""
        self.reset()
        self.started = self._clock()
        self.changed.emit()

    def update(self, stage: str, current: int, total: int, message: str) -> None:
        """Record a progress event of ``stage``; earlier stages count as finished.

        Stages in :data:`STAGE_ALIASES` are recorded as the stage they belong to.
        """
        aliased = STAGE_ALIASES.get(stage)
        if aliased is not None:
            stage = aliased
            known = self.stages.get(stage)
            if known is not None and known.started is not None and total <= 0:
                return  # "starting" of a step inside a stage already shown: keep its message
        now = self._clock()
        if stage not in self.stages:
            self.stages[stage] = StageProgress(stage)
        names = list(self.stages)
        if self.current != stage:
            for name in names[: names.index(stage)]:
                st = self.stages[name]
                if st.finished is None:
                    st.finished = now
            self.current = stage
        st = self.stages[stage]
        if st.started is None:
            st.started = now
        st.current, st.total, st.message = current, total, message
        self.changed.emit()

    def finish(self) -> None:
        """The run ended (finished, failed or cancelled)."""
        self.finished = self._clock()
        self.changed.emit()

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (0 before)."""
        if self.started is None:
            return 0.0
        return (self.finished or self._clock()) - self.started

    def stage_elapsed(self, stage: str) -> float:
        """Seconds spent in ``stage`` so far."""
        st = self.stages.get(stage)
        if st is None or st.started is None:
            return 0.0
        return (st.finished or self.finished or self._clock()) - st.started

    @property
    def overall_fraction(self) -> float:
        """Weighted fraction of the whole run done."""
        total = sum(STAGE_WEIGHTS.get(n, 0.05) for n in self.stages)
        done = sum(STAGE_WEIGHTS.get(n, 0.05) * st.fraction for n, st in self.stages.items())
        return done / total if total else 0.0

    def stage_time_left(self, stage: str) -> float | None:
        """Seconds left in ``stage`` by its own rate, or None while unknown."""
        st = self.stages.get(stage)
        if st is None or st.started is None or st.total <= 0 or st.current <= 0:
            return None
        frac = st.fraction
        if frac >= 1.0:
            return 0.0
        spent = self.stage_elapsed(stage)
        return spent * (1 - frac) / frac

    @property
    def time_left(self) -> float | None:
        """Estimate of seconds left for the whole run, or None while unknown."""
        frac = self.overall_fraction
        if self.started is None or frac < 0.02:
            return None
        if self.finished is not None:
            return 0.0
        return self.elapsed * (1 - frac) / frac
