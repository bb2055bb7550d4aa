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


def _masks_dir(tmp_path, name: str, variant: str = "connection", **model_overrides):
    """A TaskMasks artifact folder as a mask search writes it, for the network the tiny config with
    ``model_overrides`` really builds (built the way the daily run builds it to check masks)."""
    from models.features import embedding_tables
    from models.variants import build_model

    cfg = parse_config(tiny_config_dict(variant=variant, **model_overrides))
    vocab = {f.name: ["x"] for f in cfg.features if getattr(f, "vocab_size", None) is not None}
    model = build_model(cfg, embedding_tables(cfg, vocab), seed=0)
    d = tmp_path / name
    d.mkdir()
    TaskMasks.all_ones(model, structure=variant).save(d / "masks.npz")
    save_theta(str(d / "theta.npz"), [np.asarray(w) for w in model.get_weights()])
    return d


def _opts(tmp_path, on_incompatible):
    d = tiny_config_dict(variant="connection")
    d["daily"] = {"refresh": {"on_incompatible": on_incompatible}}
    cfg = parse_config(d)
    return cfg, DailyOptions(cfg, str(tmp_path), LocalPaths.make(cfg.pipeline.name, tmp_path / "s", home=tmp_path / "h"))


def test_masks_that_do_not_fit_are_refreshed_or_stop_with_a_clear_error(tmp_path, monkeypatch):
    cfg, opts = _opts(tmp_path, "refresh")
    assert cfg.model.mlp == [16, 8]
    assert check_masks(cfg, str(_masks_dir(tmp_path, "same"))) is None  # masks of this very network fit
    # masks searched for a wider network (an earlier config: mlp [32, 8]) and for another embedding size
    wider, narrower_emb = _masks_dir(tmp_path, "wider", mlp=[32, 8]), _masks_dir(tmp_path, "emb", embedding_dim=3)
    problem = check_masks(cfg, str(wider))
    assert problem and f"masks at {wider}" in problem and "16" in problem and "32" in problem, problem
    assert check_masks(cfg, str(narrower_emb)), "masks for another embedding size (first-layer fan-in) must not fit"
    # neuron masks for a connection config
    neuron = _masks_dir(tmp_path, "neuron", variant="neuron")
    assert "'neuron' masks" in check_masks(cfg, str(neuron))

    monkeypatch.setattr(daily_run, "latest_masks_uri", lambda paths: str(wider))
    ledger = DailyLedger(tmp_path / "h", cfg.pipeline.name)
    refresh, why, reuse = decide(opts, ledger, "20260102", None)
    assert refresh and reuse is None and why.startswith("masks unusable"), why

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


def _stats_dir(path, frame):
    import tensorflow_data_validation as tfdv

    (path / "Split-train").mkdir(parents=True)
    (path / "Split-train" / "FeatureStats.pb").write_bytes(tfdv.generate_statistics_from_dataframe(frame).SerializeToString())
    return str(path)


def test_growth_of_a_vocabulary_column_triggers_a_refresh_but_a_hashed_column_does_not(tmp_path, monkeypatch):
    import pandas as pd

    from pipeline.daily import DayRecord

    cfg, opts = _opts(tmp_path, "refresh")
    assert cfg.daily.refresh.max_vocab_growth == 0.2
    monkeypatch.setattr(daily_run, "latest_masks_uri", lambda paths: "/masks/1")
    monkeypatch.setattr(daily_run, "check_masks", lambda config, uri: None)
    ledger = DailyLedger(tmp_path / "h", cfg.pipeline.name)
    n = 400
    ref = pd.DataFrame({"user_id": [f"u{i % 100}" for i in range(n)], "video_id": [f"v{i % 50}" for i in range(n)]})
    ledger.record(DayRecord("20260101", "succeeded", masks_uri="/masks/1", masks_refreshed=True,
                            statistics_uri=_stats_dir(tmp_path / "s1", ref)))
    # 3x the users (user_id is hashed: bounded table) and 4% more videos: masks kept
    more_users = pd.DataFrame({"user_id": [f"u{i % 300}" for i in range(n)], "video_id": [f"v{i % 52}" for i in range(n)]})
    refresh, why, reuse = decide(opts, ledger, "20260102", _stats_dir(tmp_path / "s2", more_users))
    assert not refresh and reuse == "/masks/1" and "video_id" in why, why
    # 60% more videos: new masks
    more_videos = pd.DataFrame({"user_id": [f"u{i % 100}" for i in range(n)], "video_id": [f"v{i % 80}" for i in range(n)]})
    refresh, why, _ = decide(opts, ledger, "20260102", _stats_dir(tmp_path / "s3", more_videos))
    assert refresh and "vocabulary growth 60% in 'video_id'" in why, why


def test_vocabulary_growth_is_capped_at_the_table_size(tmp_path, monkeypatch):
    """Beyond vocab_size distinct values the table is full either way: no growth (e.g. a bigger day)."""
    import pandas as pd

    from pipeline.daily import DayRecord

    cfg, opts = _opts(tmp_path, "refresh")
    cap = next(f.vocab_size for f in cfg.features if f.name == "page")
    monkeypatch.setattr(daily_run, "latest_masks_uri", lambda paths: "/masks/1")
    monkeypatch.setattr(daily_run, "check_masks", lambda config, uri: None)
    ledger = DailyLedger(tmp_path / "h", cfg.pipeline.name)
    ref = pd.DataFrame({"page": [f"p{i % (cap + 2)}" for i in range(200)]})
    ledger.record(DayRecord("20260101", "succeeded", masks_uri="/masks/1", masks_refreshed=True,
                            statistics_uri=_stats_dir(tmp_path / "s1", ref)))
    bigger = pd.DataFrame({"page": [f"p{i % (3 * cap)}" for i in range(2000)]})
    refresh, why, _ = decide(opts, ledger, "20260102", _stats_dir(tmp_path / "s2", bigger))
    assert not refresh and "growth 0% (page)" in why, why
