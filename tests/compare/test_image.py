"""Image metrics for 2-D stages: Pearson correlation, peak matching with known shifts, correlation floor."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import parity
from parity.cli import main
from parity.compare.image import find_peaks, image_metrics, image_of
from parity.report import render_html, render_markdown


def spots(shape, centres, sigma=1.2, height=100.0, background=1.0, seed=0):
    """A detector-like image: Gaussian spots on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = background + 0.05 * rng.random(shape)
    for cy, cx in centres:
        img += height * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return img


CENTRES = [(10, 12), (30, 50), (45, 20), (60, 70), (15, 75)]


def test_identical_images():
    img = spots((80, 90), CENTRES)
    m = image_metrics(img, img)
    assert m.pearson == pytest.approx(1.0)
    assert (m.ref_peaks, m.matched, m.missing, m.extra) == (5, 5, 0, 0)
    assert m.mean_offset == (0.0, 0.0)


def test_known_shift_is_measured():
    ref = spots((80, 90), CENTRES)
    cand = spots((80, 90), [(y + 1, x - 2) for y, x in CENTRES])
    m = image_metrics(ref, cand, radius=3)
    assert m.matched == 5 and m.missing == 0 and m.extra == 0
    assert m.mean_offset == pytest.approx((1.0, -2.0))
    assert m.mean_distance == pytest.approx(np.hypot(1, 2))
    assert m.pearson < 0.9  # spots moved: the correlation drops
    tight = image_metrics(ref, cand, radius=1)  # a shift beyond the radius: unmatched
    assert tight.matched == 0 and tight.missing == 5 and tight.extra == 5


def test_missing_and_extra_peaks_are_located():
    ref = spots((80, 90), CENTRES)
    cand = spots((80, 90), CENTRES[:-1] + [(70, 5)])
    m = image_metrics(ref, cand)
    assert (m.matched, m.missing, m.extra) == (4, 1, 1)
    assert m.missing_examples == ((15, 75),) and m.extra_examples == ((70, 5),)


def test_brightness_bug_shows_as_missing_peaks():
    ref = spots((40, 40), [(10, 10), (30, 30)])
    cand = ref * 0.05  # below the reference's threshold, same shape: Pearson alone would say 1
    m = image_metrics(ref, cand)
    assert m.pearson == pytest.approx(1.0) and m.missing == 2 and m.cand_peaks == 0


def test_find_peaks_plateau_and_order():
    img = np.zeros((5, 6))
    img[1, 1] = img[1, 2] = 5.0  # a plateau: one peak, its first pixel
    img[3, 4] = 9.0
    assert find_peaks(img, 0.5).tolist() == [[3, 4], [1, 1]]  # brightest first
    assert find_peaks(img, 0.5, max_peaks=1).tolist() == [[3, 4]]


@settings(max_examples=30, deadline=None)
@given(dy=st.integers(-2, 2), dx=st.integers(-2, 2), seed=st.integers(0, 1000))
def test_any_small_shift_is_recovered(dy, dx, seed):
    rng = np.random.default_rng(seed)
    centres = [(int(y), int(x)) for y, x in zip(rng.integers(8, 56, 6), rng.integers(8, 56, 6))]
    centres = [c for i, c in enumerate(centres) if all(np.hypot(c[0] - o[0], c[1] - o[1]) > 8 for o in centres[:i])]
    ref = spots((64, 64), centres, seed=seed)
    cand = spots((64, 64), [(y + dy, x + dx) for y, x in centres], seed=seed)
    m = image_metrics(ref, cand, radius=3)
    assert m.matched == len(centres) and m.missing == m.extra == 0
    assert m.mean_offset == pytest.approx((dy, dx), abs=1e-9)


def record(path, images):
    with parity.record(path):
        for key, (img, axes) in images.items():
            parity.tap(key, img, axes=axes)
    return path


def test_image_stages_in_compare_and_every_report(tmp_path, capsys):
    ref = spots((64, 80), CENTRES)
    cand = spots((64, 80), [(y, x + 1) for y, x in CENTRES])
    r = record(str(tmp_path / "r.trace"), {"detector": (ref, ("slow", "fast")), "plain2d": (ref, None)})
    c = record(str(tmp_path / "c.trace"), {"detector": (cand, ("slow", "fast")), "plain2d": (ref, None)})
    diff = parity.compare_traces(r, c)
    im = image_of(diff["detector"])
    assert im is not None and im.matched == 5 and im.mean_offset == pytest.approx((0.0, 1.0))
    assert image_of(diff["plain2d"]) is None  # 2-D without image axes: not an image unless opted in
    assert main(["diff", r, c, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["stages"][0]["extra"]["image"]["matched"] == 5
    assert main(["diff", r, c]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "image: pearson" in out and "5/5 matched within 2 px" in out
    md = render_markdown(diff)
    assert "- image: pearson" in md and "## Images" in md
    page = render_html(diff)
    assert 'class="plot images"' in page and "candidate − reference" in page


def test_correlation_floor_is_a_tolerance(tmp_path):
    ref = spots((40, 40), [(10, 10), (30, 30)])
    cand = ref + np.random.default_rng(1).normal(0, 2.0, ref.shape)
    r = record(str(tmp_path / "r.trace"), {"img": (ref, None)})
    c = record(str(tmp_path / "c.trace"), {"img": (cand, None)})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tolerance.stages]\n"img" = { rtol = 1, atol = 100, correlation_min = 0.999 }\n')
    diff = parity.compare_traces(r, c, config=str(cfg))
    sd = diff["img"]
    assert sd.status == "fail" and sd.problem == "correlation" and "Pearson correlation" in sd.message
    assert image_of(sd) is not None  # the floor opts the 2-D stage in
    cfg.write_text('[tolerance.stages]\n"img" = { rtol = 1, atol = 100, correlation_min = 0.5 }\n')
    assert parity.compare_traces(r, c, config=str(cfg)).passed


def test_images_section_opts_any_2d_stage_in(tmp_path):
    ref = spots((40, 40), [(10, 10), (30, 30)])
    cand = spots((40, 40), [(11, 10), (30, 30)])
    r = record(str(tmp_path / "r.trace"), {"frame": (ref, None)})
    c = record(str(tmp_path / "c.trace"), {"frame": (cand, None)})
    assert image_of(parity.compare_traces(r, c)["frame"]) is None
    cfg = tmp_path / "c.toml"
    cfg.write_text('[images]\nstages = ["fra*"]\nradius = 0.5\n')
    im = image_of(parity.compare_traces(r, c, config=str(cfg))["frame"])
    assert im is not None and im.radius == 0.5 and im.matched == 1 and im.missing == 1  # the moved spot is > 0.5 px
    from parity.errors import ConfigError
    cfg.write_text('[images]\nstages = "frame"\n')
    with pytest.raises(ConfigError, match=r"\[images\] stages must be a list"):
        parity.compare_traces(r, c, config=str(cfg))
