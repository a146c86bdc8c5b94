"""Catalogue batch (engine/catalogue.py), its gallery (engine/export/gallery.py) and the CLI.

The slow tests share one catalogue of tiny synthetic products (two 16-photo bottles at 320x240
and a folder of 2 photos that cannot be reconstructed) and run it three times on one site:
cancelled part-way, then to the end with one worker killed, then again (nothing to do).
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.catalogue import (
    PRODUCTS,
    SUMMARY_NAME,
    Product,
    Resources,
    default_workers,
    find_products,
    product_config,
    product_resources,
    read_catalogue_csv,
    run_catalogue,
    slugify,
)
from engine.config import preset
from engine.errors import InputError
from engine.export import gallery
from engine.progress import CancelToken
from engine.types import Mesh

TINY_VIEWS = {"n_azimuth": 8, "elevations_deg": (20.0, 45.0), "width": 320, "height": 240}
KILL_DIR_ENV = "VITRINE_TEST_KILL_DIR"
KILLED_SLUG = "bottles-green-bottle"


def fast_config():
    """The quickest settings that still build a mesh (the preview preset stops at sparse)."""
    cfg = preset("standard")
    return cfg.replace(depth_prior=dataclasses.replace(cfg.depth_prior, enabled=False))


def kill_worker_once(slug: str, event) -> None:
    """Worker hook: the first progress event of KILLED_SLUG kills its worker (SIGKILL), once
    per marker folder; the retried worker finds the marker and goes on."""
    folder = os.environ.get(KILL_DIR_ENV)
    if slug != KILLED_SLUG or not folder:
        return
    marker = Path(folder) / f"{slug}.killed"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def make_catalogue(root: Path) -> Path:
    """Two tiny bottles (nested folders, one named in catalogue.csv) and a 2-photo folder."""
    from engine.synthetic import render_scene

    for folder, seed in (("bottles/green bottle", 0), ("bottles/second", 1)):
        scene = render_scene(root.parent / f"render{seed}", "bottle", seed=seed, **TINY_VIEWS)
        dst = root / folder
        dst.mkdir(parents=True)
        for photo in sorted(scene.image_dir.iterdir()):
            shutil.copy(photo, dst / photo.name)
    few = root / "too few"
    few.mkdir()
    for photo in sorted((root / "bottles" / "second").iterdir())[:2]:
        shutil.copy(photo, few / photo.name)
    (root / "catalogue.csv").write_text(
        "folder,name,sku,known dimension\n"
        "bottles/green bottle,Green bottle,SKU-001,height=250\n"
        "too few,Two photos only,SKU-003,\n",
        encoding="utf-8",
    )
    return root


# --------------------------------------------------------------- fast: discovery, rules


def _photo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 not decoded by discovery")


def test_find_products_nested_csv_and_slugs(tmp_path):
    cat = tmp_path / "cat"
    _photo(cat / "Shoes" / "Red Sneaker" / "a.jpg")
    _photo(cat / "Shoes" / "Red Sneaker" / "b.JPG")
    _photo(cat / "Shoes" / "Red Sneaker" / "masks" / "a.png")  # masks are not a product
    _photo(cat / "Shoes" / "Red Sneaker" / "a_mask.png")  # nor a photo
    _photo(cat / "shoes-red" / "sneaker" / "1.png")  # slug collides with Shoes/Red Sneaker
    _photo(cat / ".hidden" / "x.jpg")
    (cat / "notes").mkdir()
    (cat / "notes" / "readme.txt").write_text("no photos here")
    (cat / "catalogue.csv").write_text(
        "Folder,Product Name,SKU,Known Dimension,Marker size mm\n"
        "Shoes/Red Sneaker,Red sneaker,SN-1,width=310mm,40\n"
        "gone,Missing product,X-9,,\n",
        encoding="utf-8",
    )
    products = {p.folder: p for p in find_products(cat)}
    assert set(products) == {"Shoes/Red Sneaker", "shoes-red/sneaker", "gone"}
    red = products["Shoes/Red Sneaker"]
    assert [p.name for p in red.photos] == ["a.jpg", "b.JPG"]
    assert (red.name, red.sku, red.known_dimension, red.known_dimension_mm) == (
        "Red sneaker",
        "SN-1",
        "width",
        310.0,
    )
    assert red.marker_size_mm == 40.0
    assert products["shoes-red/sneaker"].name == "sneaker"
    slugs = [p.slug for p in products.values()]
    assert len(set(slugs)) == 3
    assert all(re.fullmatch(r"[a-z0-9-]+", s) for s in slugs)
    # colliding slugs get a suffix of their own folder's hash: stable when products come or go
    assert red.slug.startswith("shoes-red-sneaker-") and red.slug != "shoes-red-sneaker"
    (cat / "Shoes" / "Red Sneaker" / "b.JPG").unlink()
    shutil.rmtree(cat / "shoes-red")
    again = {p.folder: p.slug for p in find_products(cat)}
    assert again["Shoes/Red Sneaker"] == "shoes-red-sneaker"  # no collision left
    assert products["gone"].problem and "catalogue.csv" in products["gone"].problem
    assert products["gone"].photos == ()


def test_csv_bad_values_name_the_line(tmp_path):
    path = tmp_path / "catalogue.csv"
    path.write_text("folder,known dimension\na,weight=3\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        read_catalogue_csv(path)
    path.write_text("name,sku\nx,y\n", encoding="utf-8")
    with pytest.raises(InputError, match="'folder' column"):
        read_catalogue_csv(path)


def test_no_photos_is_an_input_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match="No photos"):
        find_products(tmp_path / "empty")


def test_slugify():
    assert slugify("Décor/Vase No. 5") == "decor-vase-no-5"
    assert slugify("///") == "product"


def test_product_config_passes_scale_hints_and_name():
    base = fast_config()
    product = Product("a", "a", (), "Vase", known_dimension="height", known_dimension_mm=250.0)
    cfg = product_config(base, product)
    assert cfg.export.product_name == "Vase"
    assert (cfg.scale.known_dimension, cfg.scale.known_dimension_mm) == ("height", 250.0)
    assert cfg.scale.marker_size_mm == 0.0
    cfg = product_config(base, dataclasses.replace(product, marker_size_mm=30.0))
    assert cfg.scale.marker_size_mm == 30.0
    assert cfg.dense == base.dense  # nothing else changes


def test_resources_and_default_workers(monkeypatch):
    import engine.catalogue as catalogue

    dense = product_resources(preset("standard"), 36)
    sparse = product_resources(preset("preview"), 36)
    high = product_resources(preset("high"), 36)
    assert (sparse.num_cpus, dense.num_cpus, high.num_cpus) == (1, 2, 4)
    assert sparse.memory_mb < dense.memory_mb < high.memory_mb
    assert product_resources(preset("standard"), 200).memory_mb > dense.memory_mb
    assert dense.num_gpus == 0 and product_resources(preset("standard", device="cuda"), 36).num_gpus
    need = Resources(num_cpus=2, memory_mb=4000)
    monkeypatch.setattr(catalogue, "usable_cpus", lambda: 16)
    monkeypatch.setattr(catalogue, "available_memory_mb", lambda: 64_000)
    assert default_workers(need, 100) == 8  # by cores: 16 // 2
    monkeypatch.setattr(catalogue, "available_memory_mb", lambda: 12_000)
    assert default_workers(need, 100) == 2  # by memory: 12000 * 0.8 // 4000
    assert default_workers(need, 1) == 1  # never more than the products
    monkeypatch.setattr(catalogue, "usable_cpus", lambda: 1)
    assert default_workers(need, 100) == 1  # at least one


def test_up_to_date_needs_same_photos_settings_and_a_finished_run(tmp_path):
    """The resume check the batch relies on (engine.run_folder.up_to_date, via Pipeline)."""
    import engine
    from engine import run_folder
    from engine.export.report import write_json_atomic
    from engine.pipeline import Pipeline

    photos = [tmp_path / "p" / "a.jpg", tmp_path / "p" / "b.jpg"]
    for p in photos:
        _photo(p)
    out = tmp_path / "run"
    (out / "work").mkdir(parents=True)
    # a local depth model folder: config.json keeps only its name (no local paths in exports)
    cfg = preset("standard")
    cfg = cfg.replace(
        depth_prior=dataclasses.replace(cfg.depth_prior, model=str(tmp_path / "models" / "da"))
    )
    pipe = Pipeline(photos, out, cfg)
    assert not pipe.up_to_date()  # nothing there
    write_json_atomic(out / "config.json", cfg.to_dict())
    assert json.loads((out / "config.json").read_text())["depth_prior"]["model"] == "da"
    write_json_atomic(out / "report.json", {"status": "finished"})
    state = {
        "key": {"inputs": run_folder.input_key(photos), "engine": engine.__version__},
        "done": {},
    }
    write_json_atomic(out / "work" / "state.json", state)
    assert not pipe.up_to_date()  # the export did not finish
    state["done"]["export"] = {}
    write_json_atomic(out / "work" / "state.json", state)
    assert pipe.up_to_date()
    assert not Pipeline(photos, out, cfg.replace(device="cpu")).up_to_date()  # other settings
    assert not Pipeline(photos[:1], out, cfg).up_to_date()  # other photos
    assert Pipeline(photos, out, cfg).fingerprint() == pipe.fingerprint()
    assert Pipeline(photos[:1], out, cfg).fingerprint() != pipe.fingerprint()
    write_json_atomic(out / "report.json", {"status": "cancelled"})
    assert not pipe.up_to_date()
    write_json_atomic(out / "report.json", {"status": "finished"})
    time.sleep(0.01)
    photos[0].write_bytes(b"\xff\xd8\xff\xe0 retouched")  # same name, new content
    assert not pipe.up_to_date()


def test_ray_requests_fit_the_local_instance():
    from engine.catalogue import _ray_fit

    high = product_resources(preset("high"), 36)
    total = {"CPU": 2.0, "memory": 8 * 2**30}
    fitted = _ray_fit(high, total, local=True, slug="a")
    assert (fitted.num_cpus, fitted.memory_mb, fitted.num_gpus) == (2, min(high.memory_mb, 8192), 0)
    assert _ray_fit(high, total, local=False, slug="a") == high  # a cluster may grow


def _report(**changes):
    report = {
        "status": "finished",
        "registered": [f"{i}.jpg" for i in range(20)],
        "unregistered": {},
        "warnings": [],
        "advice": [],
        "outputs": {"mesh.glb": 1000},
        "stages": {"mesh": {"completeness": 0.99}, "coverage": {"gaps": []}},
    }
    report.update(changes)
    return report


def test_verdict_rules():
    assert gallery.verdict(_report()) == ("ready", [])
    v, reasons = gallery.verdict(_report(unregistered={"x.jpg": "too blurry"}))
    assert v == "check" and reasons == ["1 of 21 photos could not be placed."]
    many = {f"u{i}.jpg": "no matches" for i in range(10)}
    assert gallery.verdict(_report(unregistered=many))[0] == "reshoot"  # 20 of 30 placed
    v, reasons = gallery.verdict(_report(stages={"mesh": {"completeness": 0.9}}))
    assert v == "check" and "90%" in reasons[0]
    v, reasons = gallery.verdict(_report(stages={"mesh": {"completeness": 0.5}}))
    assert v == "reshoot" and "50%" in reasons[0]
    gap = "No photos between 100 and 160 deg around the product"
    v, reasons = gallery.verdict(
        _report(stages={"mesh": {"completeness": 1.0}, "coverage": {"gaps": [gap]}})
    )
    assert (v, reasons) == ("check", [gap])
    v, reasons = gallery.verdict(
        _report(outputs={}, stages={"mesh": {"built": False, "reason": "no surface"}})
    )
    assert v == "reshoot" and reasons == ["No 3D model: no surface"]
    v, reasons = gallery.verdict(_report(status="failed", warnings=["Disk full"]))
    assert v == "reshoot" and "Disk full" in reasons[0]
    assert gallery.verdict(_report(warnings=["masks disagree"]))[1] == ["masks disagree"]


def _cube(top_rgb, side_rgb) -> Mesh:
    """A unit cube standing on z=0, its top face one colour and the rest another (split
    vertices, so that each face has its own colour)."""
    quads = {  # outward CCW
        "bottom": [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)],
        "top": [(0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)],
        "front": [(0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)],
        "back": [(0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0)],
        "left": [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)],
        "right": [(1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)],
    }
    verts, faces, cols = [], [], []
    for name, quad in quads.items():
        # subdivide each face 8x8 so that vertex colours are dense enough for the splatting
        a, b, _, d = (np.array(p, float) for p in quad)
        base = len(verts)
        n = 9
        for i in range(n):
            for j in range(n):
                verts.append(a + (b - a) * i / (n - 1) + (d - a) * j / (n - 1))
                cols.append(top_rgb if name == "top" else side_rgb)
        for i in range(n - 1):
            for j in range(n - 1):
                p = base + i * n + j
                faces += [(p, p + n, p + n + 1), (p, p + n + 1, p + 1)]
    v = np.array(verts) - [0.5, 0.5, 0.0]
    return Mesh(v, np.array(faces, np.int32), np.array(cols, np.uint8))


def test_render_still_shows_the_product_in_its_colours():
    img = gallery.render_still(_cube((20, 40, 230), (230, 30, 20)), (200, 150))
    assert img.shape == (150, 200, 3) and img.dtype == np.uint8
    background = np.all(img == (246, 246, 244), axis=2)
    assert background[0, 0] and background[-1, -1] and background[0, -1]
    product = ~background
    assert 0.2 < product.mean() < 0.8  # fitted to the frame with a margin
    ys, xs = np.nonzero(product)
    assert abs(xs.mean() - 100) < 12 and abs(ys.mean() - 75) < 12  # centred
    px = img[product].astype(int)
    blue = (px[:, 2] > px[:, 0] + 60).mean()
    red = (px[:, 0] > px[:, 2] + 60).mean()
    assert blue > 0.1 and red > 0.4  # the top seen from above, the sides lit and shaded
    top_rows = ys[(img[ys, xs, 2] > img[ys, xs, 0] + 60)]
    side_rows = ys[(img[ys, xs, 0] > img[ys, xs, 2] + 60)]
    assert top_rows.mean() < side_rows.mean()  # the top face is drawn above the sides
    side = px[(px[:, 0] > px[:, 2] + 60)]
    assert side[:, 0].std() > 5  # two sides in different light: shaded, not flat


def test_ray_missing_exits_2_with_install_hint(tmp_path, monkeypatch, capsys):
    import main

    _photo(tmp_path / "cat" / "a" / "1.jpg")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # import ray -> ImportError
    code = main.main(
        ["batch", str(tmp_path / "cat"), "--out", str(tmp_path / "site"), "--ray", "local"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[cluster]"' in err
    assert not (tmp_path / "site" / SUMMARY_NAME).exists()  # nothing started


def test_batch_cli_shares_reconstruct_options():
    import main

    args = main.build_parser().parse_args(
        [
            "batch",
            "cat",
            "--out",
            "site",
            "--preset",
            "high",
            "--no-depth-prior",
            "--no-masks",
            "--max-triangles",
            "5000",
            "--marker-size-mm",
            "40",
            "--workers",
            "3",
        ]
    )
    cfg = main._config_from_args(args)
    assert cfg.preset == "high" and not cfg.depth_prior.enabled and not cfg.masks.enabled
    assert cfg.mesh.max_triangles == 5000 and cfg.scale.marker_size_mm == 40.0
    assert args.workers == 3 and args.func is main.cmd_batch and args.ray is None
    assert (
        main.build_parser().parse_args(["batch", "c", "--out", "s", "--ray", "auto"]).ray == "auto"
    )
    with pytest.raises(SystemExit):
        main.build_parser().parse_args(["batch", "cat", "--out", "s", "--workers", "0"])


# --------------------------------------------------------------- slow: real batches


def _summary(site: Path) -> dict:
    return json.loads((site / SUMMARY_NAME).read_text(encoding="utf-8"))


def _by_slug(summary: dict) -> dict:
    return {p["slug"]: p for p in summary["products"]}


@pytest.fixture(scope="module")
def batch_runs(tmp_path_factory):
    """One catalogue, one site, three runs: cancelled, completed with a killed worker, again."""
    root = tmp_path_factory.mktemp("batch")
    catalogue = make_catalogue(root / "catalogue")
    site = root / "site"
    cfg = fast_config()
    runs: dict = {"catalogue": catalogue, "site": site, "config": cfg}

    # 1: cancelled once the second bottle's cameras are solved (as Ctrl-C does in the CLI)
    token = CancelToken()
    state = site / PRODUCTS / "bottles-second" / "work" / "state.json"

    def cancel_after_sfm() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not token.cancelled:
            try:
                if "sfm" in json.loads(state.read_text(encoding="utf-8")).get("done", {}):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        token.cancel()

    watcher = threading.Thread(target=cancel_after_sfm, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    runs["cancelled"] = run_catalogue(catalogue, site, cfg, workers=2, cancel=token)
    runs["cancelled_s"] = time.monotonic() - t0
    watcher.join()
    runs["cancelled_summary"] = _summary(site)

    # 2: to the end; the green bottle's worker is killed at its first progress event
    kill_dir = root / "kills"
    kill_dir.mkdir()
    os.environ[KILL_DIR_ENV] = str(kill_dir)
    events = []
    try:
        t0 = time.monotonic()
        runs["full"] = run_catalogue(
            catalogue, site, cfg, workers=2, worker_hook=kill_worker_once, progress=events.append
        )
        runs["full_s"] = time.monotonic() - t0
    finally:
        os.environ.pop(KILL_DIR_ENV, None)
    runs["events"] = events
    runs["kills"] = sorted(p.name for p in kill_dir.iterdir())
    runs["full_summary"] = _summary(site)

    # 3: the same command again
    reports = sorted((site / PRODUCTS).glob("*/report.json"))
    runs["mtimes"] = {p: p.stat().st_mtime_ns for p in reports}
    t0 = time.monotonic()
    runs["again"] = run_catalogue(catalogue, site, cfg, workers=2)
    runs["again_s"] = time.monotonic() - t0
    runs["mtimes_after"] = {p: p.stat().st_mtime_ns for p in reports}
    return runs


@pytest.mark.slow
def test_cancel_leaves_a_consistent_summary_and_a_rerun_continues(batch_runs):
    cancelled = batch_runs["cancelled"]
    assert cancelled.cancelled
    summary = batch_runs["cancelled_summary"]
    products = _by_slug(summary)
    assert set(products) == {"bottles-green-bottle", "bottles-second", "too-few"}
    assert products["bottles-second"]["status"] == "pending"  # stopped after its SfM
    assert sum(summary["counts"].values()) == 3
    for entry in products.values():
        assert entry["status"] in ("pending", "finished", "failed")
        if entry["status"] == "failed":
            assert entry["reason"] and entry["exit_code"] in (2, 3)
    assert not list(batch_runs["site"].glob("*.tmp")) and not list(batch_runs["site"].glob(".*"))
    # the rerun resumed the cancelled product after its cameras: SfM did not run again
    report = json.loads(
        (batch_runs["site"] / PRODUCTS / "bottles-second" / "report.json").read_text()
    )
    assert report["status"] == "finished"
    assert "sfm" not in report["stage_seconds"] and "dense" in report["stage_seconds"]


@pytest.mark.slow
def test_full_run_summary_and_run_folders(batch_runs):
    site = batch_runs["site"]
    result = batch_runs["full"]
    assert not result.cancelled
    products = _by_slug(batch_runs["full_summary"])
    assert batch_runs["full_summary"]["counts"] == {"finished": 2, "failed": 1}
    green, second, few = (
        products["bottles-green-bottle"],
        products["bottles-second"],
        products["too-few"],
    )
    assert (green["name"], green["sku"], green["folder"]) == (
        "Green bottle",
        "SKU-001",
        "bottles/green bottle",
    )
    assert second["name"] == "second" and second["photos"] == 16
    # the bad product is failed with its reason and exit code, and did not stop the others
    assert few["status"] == "failed" and few["exit_code"] in (2, 3)
    assert "2 photos" in few["reason"] and few["name"] == "Two photos only"
    for entry in (green, second):
        run = site / PRODUCTS / entry["slug"]
        assert entry["status"] == "finished" and entry["run"] == f"{PRODUCTS}/{entry['slug']}/"
        for name in ("report.json", "config.json", "dense.ply", "mesh.glb", "viewer.html"):
            assert (run / name).is_file(), name
        assert (run / "sparse" / "0" / "images.bin").is_file()
        report = json.loads((run / "report.json").read_text())
        assert report["status"] == "finished"
        # the verdict comes from the run's own report
        assert (entry["verdict"], entry["reasons"]) == gallery.verdict(report, run)
        assert entry["dimensions_mm"] == report["dimensions_mm"]
    # catalogue.csv's known height gave the green bottle true dimensions
    assert green["dimensions_mm"][2] == pytest.approx(250.0, abs=0.5)
    assert second["dimensions_mm"] is None
    config = json.loads((site / PRODUCTS / green["slug"] / "config.json").read_text())
    assert config["scale"]["known_dimension"] == "height"
    assert config["export"]["product_name"] == "Green bottle"
    assert not config["depth_prior"]["enabled"]
    # no local absolute paths in the published summary
    text = (site / SUMMARY_NAME).read_text()
    assert str(batch_runs["catalogue"]) not in text and str(site) not in text


@pytest.mark.slow
def test_killed_worker_is_retried_and_the_product_completes(batch_runs):
    assert batch_runs["kills"] == [f"{KILLED_SLUG}.killed"]
    green = _by_slug(batch_runs["full_summary"])[KILLED_SLUG]
    assert green["status"] == "finished" and green["attempts"] == 2
    second = _by_slug(batch_runs["full_summary"])["bottles-second"]
    assert second["attempts"] == 1


@pytest.mark.slow
def test_progress_one_event_per_product_with_time_left(batch_runs):
    events = batch_runs["events"]
    assert events[0].stage == "catalogue" and events[0].current == 0
    done = [e for e in events[1:] if not e.partial.get("started")]
    started = [e for e in events[1:] if e.partial.get("started")]
    computed = batch_runs["full"].computed
    # one start per product (a retried worker does not start it again), before its end
    assert sorted(e.partial["product"]["slug"] for e in started) == sorted(computed)
    assert all(e.partial["product"]["status"] == "running" for e in started)
    for slug in computed:
        first_start = next(
            i for i, e in enumerate(events) if e in started and e.partial["product"]["slug"] == slug
        )
        end = next(
            i for i, e in enumerate(events) if e in done and e.partial["product"]["slug"] == slug
        )
        assert first_start < end
    assert len(done) == len(computed) == events[0].total
    assert [e.current for e in done] == list(range(1, len(done) + 1))
    assert {e.partial["product"]["slug"] for e in done} == set(computed)
    assert all(e.partial["seconds_left"] > 0 for e in done[:-1])
    assert done[-1].partial["seconds_left"] is None


@pytest.mark.slow
def test_second_run_recomputes_nothing(batch_runs):
    again = batch_runs["again"]
    assert again.computed == []
    assert batch_runs["again_s"] < 15  # stills and pages are cached; no product runs
    assert batch_runs["mtimes"] == batch_runs["mtimes_after"]
    assert len(batch_runs["mtimes"]) == 3  # the failed product's report too
    before = _by_slug(batch_runs["full_summary"])
    after = _by_slug(_summary(batch_runs["site"]))
    for slug, entry in before.items():
        for key in ("status", "verdict", "reasons", "exit_code", "reason", "dimensions_mm"):
            assert after[slug].get(key) == entry.get(key), (slug, key)


def _pages(site: Path) -> list[Path]:
    return [site / "index.html", *sorted((site / PRODUCTS).glob("*/index.html"))]


@pytest.mark.slow
def test_gallery_cards_verdicts_and_product_pages(batch_runs):
    site = batch_runs["site"]
    index = (site / "index.html").read_text(encoding="utf-8")
    products = _by_slug(_summary(site))
    cards = re.findall(r'<article class="card" data-slug="([^"]+)" data-verdict="([^"]+)">', index)
    finished = {s: p for s, p in products.items() if p["status"] == "finished"}
    assert dict(cards) == {s: p["verdict"] for s, p in finished.items()}
    for slug, entry in finished.items():
        card = index.split(f'data-slug="{slug}"')[1].split("</article>")[0]
        assert html.escape(entry["name"]) in card
        assert f'href="products/{slug}/index.html"' in card
        for reason in entry["reasons"]:
            assert html.escape(reason) in card
        still = site / PRODUCTS / slug / gallery.STILL
        assert f'src="products/{slug}/{gallery.STILL}"' in card
        from PIL import Image

        img = np.asarray(Image.open(still).convert("RGB"))
        product = ~np.all(img == (246, 246, 244), axis=2)
        assert 0.05 < product.mean() < 0.9  # the bottle is in the picture
        page = (site / PRODUCTS / slug / "index.html").read_text(encoding="utf-8")
        assert '<model-viewer id="model"' in page and "viewer.src = 'mesh.glb'" in page
        assert f'src="../../{gallery.ASSETS}/{gallery.MODEL_VIEWER_JS}"' in page
        assert 'href="viewer.html"' in page and 'href="mesh.glb" download' in page
        assert ('href="mesh.usdz" download' in page) == (
            site / PRODUCTS / slug / "mesh.usdz"
        ).is_file()
        inline = (site / PRODUCTS / slug / "model-data.js").read_text()
        assert "data:model/gltf-binary;base64," in inline
    assert "SKU SKU-001" in index and "250 mm" in index
    failed = index.split('<section class="failed">')[1]
    assert 'data-slug="too-few"' in failed and "Two photos only" in failed
    assert f"exit code {products['too-few']['exit_code']}" in failed
    # model-viewer vendored once, with its licence
    assets = site / gallery.ASSETS
    assert (assets / gallery.MODEL_VIEWER_JS).read_bytes() == (
        gallery.WEB_RESOURCES / gallery.MODEL_VIEWER_JS
    ).read_bytes()
    assert "Apache License" in (assets / gallery.MODEL_VIEWER_LICENSE).read_text()


@pytest.mark.slow
def test_gallery_makes_no_remote_requests(batch_runs):
    site = batch_runs["site"]
    pages = _pages(site)
    assert len(pages) == 3
    for page in pages:
        text = page.read_text(encoding="utf-8")
        refs = re.findall(r"""(?:src|href|poster|ios-src)\s*=\s*["']([^"']*)["']""", text)
        assert refs
        for ref in refs:
            assert not re.match(r"(?i)^(https?:)?//", ref), (page, ref)
            if ref.startswith("data:"):  # inline (the empty favicon)
                continue
            assert not ref.startswith("/"), (page, ref)  # relative: any host, and file://
            target = (page.parent / ref.split("#")[0]).resolve()
            assert target.exists(), (page, ref)
        assert "url(" not in text and "@import" not in text


def kill_worker_always(slug: str, event) -> None:
    """Worker hook: every worker of a product named 'doomed' is killed at its first event."""
    if slug == "doomed":
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_worker_dying_twice_is_recorded_failed_and_others_go_on(batch_runs, tmp_path):
    catalogue = tmp_path / "catalogue"
    for name in ("doomed", "other"):
        shutil.copytree(batch_runs["catalogue"] / "too few", catalogue / name)
    site = tmp_path / "site"
    result = run_catalogue(
        catalogue, site, batch_runs["config"], workers=1, worker_hook=kill_worker_always
    )
    products = _by_slug(_summary(site))
    doomed, other = products["doomed"], products["other"]
    assert doomed["status"] == "failed" and doomed["exit_code"] == 1
    assert doomed["attempts"] == 2  # retried once
    assert "killed by signal 9" in doomed["reason"] and "--workers" in doomed["reason"]
    # the other product ran to its own (input) failure all the same
    assert other["status"] == "failed" and other["exit_code"] in (2, 3)
    assert other["attempts"] == 1 and "2 photos" in other["reason"]
    assert sorted(result.computed) == ["doomed", "other"]
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'data-slug="doomed"' in index.split('<section class="failed">')[1]


# --------------------------------------------------------------- slow: Ray


@pytest.mark.slow
def test_ray_local_runs_products_as_tasks(tmp_path, batch_runs):
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.fail(
            'Ray is not installed: the test extra includes it (pip install -e ".[test]"); '
            "the Ray path of the batch cannot be checked without it."
        )
    catalogue = tmp_path / "catalogue"
    for folder in ("bottles/green bottle", "bottles/second", "too few"):
        shutil.copytree(batch_runs["catalogue"] / folder, catalogue / folder)
    shutil.copy(batch_runs["catalogue"] / "catalogue.csv", catalogue / "catalogue.csv")
    site = tmp_path / "site"
    kill_dir = tmp_path / "kills"
    kill_dir.mkdir()
    os.environ[KILL_DIR_ENV] = str(kill_dir)  # inherited by the Ray instance started here
    try:
        result = run_catalogue(
            catalogue, site, batch_runs["config"], ray_address="local", worker_hook=kill_worker_once
        )
    finally:
        os.environ.pop(KILL_DIR_ENV, None)
    products = _by_slug(_summary(site))
    # the killed task was retried by Ray and the product completed
    assert [p.name for p in kill_dir.iterdir()] == [f"{KILLED_SLUG}.killed"]
    green = products[KILLED_SLUG]
    assert green["status"] == "finished", green
    assert products["too-few"]["status"] == "failed"
    assert (
        products["too-few"]["exit_code"]
        == _by_slug(batch_runs["full_summary"])["too-few"]["exit_code"]
    )
    assert products["bottles-second"]["status"] == "finished", products["bottles-second"]
    # the same files as the local path's run folders
    for slug in (KILLED_SLUG, "bottles-second"):
        local = batch_runs["site"] / PRODUCTS / slug
        remote = site / PRODUCTS / slug
        names = {p.relative_to(local).as_posix() for p in local.rglob("*") if "work" not in p.parts}
        names_ray = {
            p.relative_to(remote).as_posix() for p in remote.rglob("*") if "work" not in p.parts
        }
        assert names_ray == names, slug
    assert green["dimensions_mm"][2] == pytest.approx(250.0, abs=0.5)
    assert sorted(result.computed) == sorted([KILLED_SLUG, "bottles-second", "too-few"])
    again = run_catalogue(catalogue, site, batch_runs["config"], ray_address="local")
    assert again.computed == []


# --------------------------------------------------------------- slow: the CLI, a browser


@pytest.mark.slow
def test_cli_ctrl_c_stops_cleanly(batch_runs, tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it."""
    import subprocess
    import sys

    catalogue = tmp_path / "catalogue"
    shutil.copytree(batch_runs["catalogue"] / "bottles" / "second", catalogue / "second")
    site = tmp_path / "site"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [
            sys.executable,
            str(root / "main.py"),
            "batch",
            str(catalogue),
            "--out",
            str(site),
            "--no-depth-prior",
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
        # a test runner may start us with SIGINT ignored; a terminal's foreground job has it on
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    state = site / PRODUCTS / "second" / "work" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "sfm" in json.loads(state.read_text(encoding="utf-8")).get("done", {}):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert time.monotonic() - t0 < 60
    assert "Cancelled" in err and "run the same command again" in err
    for _ in range(40):  # no worker (or its meshing child) outlives the command
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.25)
    else:
        pytest.fail("processes of the cancelled batch are still running")
    summary = _summary(site)
    assert [(p["slug"], p["status"]) for p in summary["products"]] == [("second", "pending")]
    report = json.loads((site / PRODUCTS / "second" / "report.json").read_text())
    assert report["status"] == "cancelled"
    done = json.loads(state.read_text(encoding="utf-8"))["done"]
    assert "sfm" in done  # kept: the next run continues from here


def _browser_tools():
    """node, Chromium and an environment where puppeteer-core resolves.

    puppeteer-core comes from ``VITRINE_NODE_MODULES`` (or ``NODE_PATH``) when it resolves
    there, else it is installed once from npm at the pinned version of bench/render_glb.py
    into its cache (``~/.cache/vitrine-bench/npm``), as the GLB renders are.
    """
    import importlib.util
    import subprocess

    node = shutil.which("node")
    chromium = os.environ.get("VITRINE_CHROMIUM") or next(
        (c for c in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if c),
        None,
    )
    if not node or not chromium:
        pytest.skip("node and Chromium are needed to open the gallery in a browser")

    def resolves(modules: str) -> bool:
        env = {**os.environ, "NODE_PATH": modules}
        found = subprocess.run(
            [node, "-e", "require.resolve('puppeteer-core')"], env=env, capture_output=True
        )
        return found.returncode == 0

    modules = os.environ.get("VITRINE_NODE_MODULES") or os.environ.get("NODE_PATH", "")
    if not modules or not resolves(modules):
        root = Path(__file__).resolve().parents[2]
        spec = importlib.util.spec_from_file_location(
            "render_glb", root / "bench" / "render_glb.py"
        )
        render_glb = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(render_glb)
        try:
            modules = str(render_glb.npm_packages(Path.home() / ".cache" / "vitrine-bench" / "npm"))
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.fail(
                f"puppeteer-core could not be installed from npm ({exc}); set "
                "VITRINE_NODE_MODULES to a node_modules folder that has it"
            )
        assert resolves(modules), modules
    return node, chromium, {**os.environ, "NODE_PATH": modules}


@pytest.mark.slow
@pytest.mark.parametrize("served", ["file", "http"])
def test_gallery_in_headless_chromium(batch_runs, served):
    import functools
    import http.server
    import subprocess

    node, chromium, env = _browser_tools()
    site = batch_runs["site"]
    server = None
    if served == "http":
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
    else:
        base = site.resolve().as_uri()
    try:
        run = subprocess.run(
            [node, str(Path(__file__).with_name("gallery_check.cjs")), str(site), base, chromium],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if server is not None:
            server.shutdown()
    assert run.returncode == 0, run.stderr[-2000:]
    pages = json.loads(run.stdout)
    finished = [p for p in _summary(site)["products"] if p["status"] == "finished"]
    assert set(pages) == {"index.html", *(f"products/{p['slug']}/index.html" for p in finished)}
    for name, page in pages.items():
        assert page["errors"] == [], (name, page["errors"])
        assert page["outside"] == [], (name, page["outside"])
        if name != "index.html":
            assert page["loaded"] == "loaded", name
            assert page["coloured"] > 0.02, (name, page["coloured"])  # the product is drawn


def test_joining_a_token_cluster_says_how_to_authenticate():
    from engine.catalogue import _join_failure

    exc = RuntimeError(
        "Unauthenticated: RPC error: InvalidAuthToken: Authentication token is missing"
    )
    text = _join_failure("auto", exc)
    assert "'auto'" in text and "RAY_AUTH_MODE=token" in text and "ray get-auth-token" in text
    plain = _join_failure("ray://head:10001", ConnectionError("timed out"))
    assert "timed out" in plain and "--ray local" in plain and "TOKEN" not in plain
