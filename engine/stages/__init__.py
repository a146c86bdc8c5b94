"""Pipeline stages: one module per stage, each called the same way.

Every stage's entry point is ``run(inputs, cfg, out_dir, *, progress, cancel) -> Result``:

- ``inputs``: what the stage works on; a stage with several inputs takes a small frozen
  dataclass (:class:`~engine.stages.dense.DenseInputs`, :class:`~engine.stages.mesh.MeshInputs`,
  :class:`~engine.stages.scale.ScaleInputs`, :class:`~engine.stages.coverage.CoverageInputs`,
  :class:`~engine.stages.single_photo.SinglePhotoInputs`);
- ``cfg``: its frozen settings (:mod:`engine.config`; the single-photo relief has its own
  :class:`~engine.stages.single_photo.SinglePhotoConfig`);
- ``out_dir``: the folder it writes into, or None for a stage that writes nothing (scale,
  coverage);
- ``progress`` and ``cancel``: :class:`engine.progress.ProgressEvent` callback and token;
  a stage may take more keyword-only arguments (``device``, the depth ``estimator``).

The result is a dataclass whose ``to_report()`` is the stage's section of ``report.json``
(:mod:`engine.steps` puts it there).
"""
