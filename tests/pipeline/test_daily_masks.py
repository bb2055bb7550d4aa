"""Masks that are missing or do not fit the network: a refresh or a clear error, by policy."""

import numpy as np
import pytest

from components.mask_search import save_theta
from models.config import parse_config
from models.masks import TaskMasks
from pipeline import daily_run
from pipeline.daily import DailyLedger
from pipeline.daily_run import DailyOptions, MasksUnusableError, check_masks, decide
from pipeline.runner import LocalPaths
from tests.conftest import tiny_config_dict


def _masks_dir(tmp_path, units):
    """A TaskMasks artifact folder for an MLP of ``units`` (the config's is [16, 8])."""
    d = tmp_path / "masks"
    d.mkdir()
    shapes, fan_in = [], 40
    for u in units:
        shapes.append((fan_in, u))
        fan_in = u
    ms = {t: [np.ones(s, np.float32) for s in shapes] for t in ("ctr", "cvr")}
    TaskMasks("connection", [f"snet/dense_{i}" for i in range(len(units))], ms).save(d / "masks.npz")
    save_theta(str(d / "theta.npz"), [np.zeros(1)])
    return d


def _opts(tmp_path, on_incompatible):
    d = tiny_config_dict(variant="connection")
    d["daily"] = {"refresh": {"on_incompatible": on_incompatible}}
    cfg = parse_config(d)
    return cfg, DailyOptions(cfg, str(tmp_path), LocalPaths.make(cfg.pipeline.name, tmp_path / "s", home=tmp_path / "h"))


def test_masks_that_do_not_fit_are_refreshed_or_stop_with_a_clear_error(tmp_path, monkeypatch):
    masks = _masks_dir(tmp_path, [32, 8])  # the network has [16, 8]
    cfg, opts = _opts(tmp_path, "refresh")
    problem = check_masks(cfg, str(masks))
    assert problem and "masks at" in problem
    monkeypatch.setattr(daily_run, "latest_masks_uri", lambda paths: str(masks))
    ledger = DailyLedger(tmp_path / "h", cfg.pipeline.name)
    refresh, why, reuse = decide(opts, ledger, "20260102", None)
    assert refresh and reuse is None and why.startswith("masks unusable")

    cfg, opts = _opts(tmp_path, "error")
    with pytest.raises(MasksUnusableError, match="on_incompatible=error.*--refresh-masks"):
        decide(opts, ledger, "20260102", None)


def test_missing_mask_files_are_named(tmp_path):
    cfg, _ = _opts(tmp_path, "refresh")
    (tmp_path / "gone").mkdir()
    problem = check_masks(cfg, str(tmp_path / "gone"))
    assert "cannot be read" in problem and "masks.npz" in problem


def test_no_masks_yet_means_a_first_search(tmp_path, monkeypatch):
    cfg, opts = _opts(tmp_path, "refresh")
    monkeypatch.setattr(daily_run, "latest_masks_uri", lambda paths: None)
    refresh, why, _ = decide(opts, DailyLedger(tmp_path / "h", cfg.pipeline.name), "20260101", None)
    assert refresh and "first mask search" in why
