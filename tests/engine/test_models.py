"""engine.models: loading Depth-Anything from a folder, the cache or a (faked) download.

A tiny random-weight Depth-Anything network is built once with ``save_pretrained`` and loaded
through the real loader; no test touches the network.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelError
from engine.models import (
    DEFAULT_DEPTH_MODEL,
    ModelUnavailable,
    _hub,
    hub_cache_dir,
    licence_for,
    load_depth_model,
)
from engine.progress import Cancelled, CancelToken
from tests.tiny_models import CACHE_COMMIT, INPUT, make_tiny_depth_model, place_in_cache


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_depth_model(tmp_path_factory.mktemp("models") / "tiny-depth")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------------------------


def test_local_folder_loads_and_predicts(tiny_model, no_network):
    est = load_depth_model(tiny_model, input_size=INPUT)
    assert est.info.source == "local"
    assert est.info.name == "tiny-depth"
    assert est.info.device == "cpu" and est.info.dtype == "float32"
    assert est.info.input_size == INPUT
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    out = est.predict(rgb)
    assert out.shape == (60, 90) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.std() > 0
    # batched prediction gives the same maps, in order, for mixed sizes
    other = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    batch = est.predict_batch([rgb, other, rgb])
    assert [b.shape for b in batch] == [(60, 90), (40, 30), (60, 90)]
    tol = 1e-3 * float(np.abs(out).max())  # batched matmuls round differently
    np.testing.assert_allclose(batch[0], out, rtol=1e-2, atol=tol)
    np.testing.assert_allclose(batch[2], out, rtol=1e-2, atol=tol)
    assert not no_network


def test_input_shape_keeps_aspect_in_patches(tiny_model):
    est = load_depth_model(tiny_model, input_size=518)
    assert est.info.input_size == 518
    assert est.input_shape(600, 800) == (518, 686)
    assert est.input_shape(800, 600) == (686, 518)
    with pytest.raises(ValueError, match="uint8"):
        est.predict(np.zeros((10, 10), np.float32))


def test_cache_is_used_by_id_without_network(tiny_model, hub_cache, no_network):
    repo_id = "vitrine-tests/Depth-Anything-V2-Small-hf"
    snap = place_in_cache(tiny_model, hub_cache, repo_id)
    assert hub_cache_dir() == hub_cache
    est = load_depth_model(repo_id, input_size=INPUT, allow_download=False)
    assert est.info.source == "cache"
    assert Path(est.info.path) == snap
    assert est.info.name == repo_id
    assert est.info.licence == "Apache-2.0" and est.info.commercial_use
    assert est.info.licence_warning == ""
    assert not no_network


def test_missing_id_is_unavailable_and_never_touches_the_network(
    hub_cache, no_network, monkeypatch
):
    import huggingface_hub

    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the Hub API must not be called")

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", spy)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", spy)
    with pytest.raises(ModelUnavailable) as err:
        load_depth_model(DEFAULT_DEPTH_MODEL, allow_download=False)
    msg = str(err.value)
    assert DEFAULT_DEPTH_MODEL in msg
    assert "not found on this computer" in msg
    assert "--depth-model" in msg and "--download-models" in msg
    assert isinstance(err.value, ModelError)
    assert not no_network and not calls


def test_missing_folder_is_unavailable(tmp_path):
    with pytest.raises(ModelUnavailable, match="does not exist.*--depth-model"):
        load_depth_model(tmp_path / "no-such-model")
    with pytest.raises(ModelUnavailable, match="is a file"):
        (tmp_path / "model.safetensors").write_bytes(b"x")
        load_depth_model(tmp_path / "model.safetensors")


def test_download_only_when_allowed_with_progress(tiny_model, hub_cache, monkeypatch):
    calls = []

    def fake_snapshot_download(repo_id, *, cache_dir, local_files_only=False, **kw):
        calls.append({"local_files_only": local_files_only, **kw})
        repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
        snap = repo / "snapshots" / CACHE_COMMIT
        if local_files_only:
            if not snap.is_dir():
                from huggingface_hub.errors import LocalEntryNotFoundError

                raise LocalEntryNotFoundError("not cached")
            return str(snap)
        files = sorted(tiny_model.iterdir())
        bar = kw["tqdm_class"](desc=f"Fetching {len(files)} files", total=len(files))
        with bar:
            for f in files:
                snap.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, snap / f.name)
                bar.update(1)
        return str(snap)

    monkeypatch.setattr(_hub, "snapshot_download", fake_snapshot_download)
    repo_id = "depth-anything/Depth-Anything-V2-Small-hf"
    with pytest.raises(ModelUnavailable):
        load_depth_model(repo_id, allow_download=False)
    assert [c["local_files_only"] for c in calls] == [True]

    events = []
    est = load_depth_model(repo_id, allow_download=True, input_size=INPUT, progress=events.append)
    assert est.info.source == "download"
    assert est.info.licence == "Apache-2.0"
    download = [c for c in calls if not c["local_files_only"]]
    assert len(download) == 1
    patterns = download[0]["allow_patterns"]
    assert "*.safetensors" in patterns and not any("bin" in p or "pt" in p for p in patterns)
    assert all(e.stage == "depth_prior" for e in events)
    assert events[0].message.startswith("Downloading depth model")
    assert events[-1].message.startswith("Downloaded depth model")
    assert any("files" in e.message for e in events)
    # the next load finds it in the cache
    again = load_depth_model(repo_id, allow_download=True, input_size=INPUT)
    assert again.info.source == "cache"


def test_download_is_cancellable(hub_cache, monkeypatch):
    token = CancelToken()

    def fake_snapshot_download(repo_id, *, cache_dir, local_files_only=False, **kw):
        if local_files_only:
            raise FileNotFoundError("not cached")
        bar = kw["tqdm_class"](desc="Fetching 3 files", total=3)
        bar.update(1)
        token.cancel()
        bar.update(1)
        raise AssertionError("a cancelled download must stop")

    monkeypatch.setattr(_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(Cancelled):
        load_depth_model("org/Depth-Anything-V2-Small-hf", allow_download=True, cancel=token)


def test_failed_download_is_unavailable(hub_cache, monkeypatch):
    def fake_snapshot_download(repo_id, *, cache_dir, local_files_only=False, **kw):
        raise OSError("connection refused")

    monkeypatch.setattr(_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(ModelUnavailable, match="could not be downloaded.*internet"):
        load_depth_model("org/Depth-Anything-V2-Small-hf", allow_download=True)


def test_pickle_only_folder_is_refused(tiny_model, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_model / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelUnavailable) as err:
        load_depth_model(folder)
    msg = str(err.value)
    assert str(folder) in msg
    assert "safetensors are required" in msg and "pytorch_model.bin" in msg


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors_is_a_clear_model_error(tiny_model, tmp_path, damage):
    folder = _copy(tiny_model, tmp_path / "broken")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"\x00garbage" * 10 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ModelError) as err:
        load_depth_model(folder)
    assert isinstance(err.value, ModelUnavailable)
    assert str(folder) in str(err.value)
    assert "damaged" in str(err.value) or "could not be loaded" in str(err.value)


def test_weights_that_do_not_match_the_config_are_refused(tiny_model, tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    # a weight missing: transformers would fill it with random values and only warn
    folder = _copy(tiny_model, tmp_path / "missing-weight")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors.pop("backbone.embeddings.cls_token")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelUnavailable, match="does not match its configuration.*cls_token"):
        load_depth_model(folder)
    # weights of another shape than the configuration says
    folder = _copy(tiny_model, tmp_path / "other-shape")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["fusion_hidden_size"] = 24
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelUnavailable, match="'other-shape' in .* could not be loaded"):
        load_depth_model(folder)


def test_other_model_types_are_refused(tiny_model, tmp_path):
    import json

    folder = _copy(tiny_model, tmp_path / "not-depth")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "bert"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelUnavailable, match="not a Depth-Anything"):
        load_depth_model(folder)


def test_non_commercial_licence_is_flagged(tiny_model, tmp_path, caplog):
    folder = _copy(tiny_model, tmp_path / "Depth-Anything-V2-Large-hf")
    with caplog.at_level(logging.WARNING, logger="engine.models"):
        est = load_depth_model(folder, input_size=INPUT)
    assert est.info.licence == "CC-BY-NC-4.0"
    assert est.info.commercial_use is False
    assert "non-commercial use only" in est.info.licence_warning
    assert any("non-commercial" in r.getMessage() for r in caplog.records)
    assert est.info.to_dict()["licence"] == "CC-BY-NC-4.0"


@pytest.mark.parametrize(
    ("name", "licence", "commercial"),
    [
        ("depth-anything/Depth-Anything-V2-Small-hf", "Apache-2.0", True),
        ("depth-anything/Depth-Anything-V2-Base-hf", "CC-BY-NC-4.0", False),
        ("depth-anything/Depth-Anything-V2-Large-hf", "CC-BY-NC-4.0", False),
        ("Depth-Anything-V2-Metric-Indoor-Large-hf", "CC-BY-NC-4.0", False),
        ("my-own-depth", "unknown (check the model card)", False),
    ],
)
def test_licence_table(name, licence, commercial):
    got, ok, warning = licence_for(name)
    assert (got, ok) == (licence, commercial)
    assert bool(warning) is (not commercial)


def test_repo_ids_and_folders_are_told_apart():
    assert _hub.looks_like_repo_id("depth-anything/Depth-Anything-V2-Small-hf")
    assert not _hub.looks_like_repo_id(Path("depth-anything/Depth-Anything-V2-Small-hf"))
    assert not _hub.looks_like_repo_id("/models/depth")
    assert not _hub.looks_like_repo_id("./depth")
    assert not _hub.looks_like_repo_id("a/b/c")
