"""Shared fixtures: a tiny config and a small synthetic frame (fast to train on)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VIDEO_CONFIG = REPO / "configs" / "video.yaml"


def tiny_config_dict(**model_overrides) -> dict:
    data = yaml.safe_load(VIDEO_CONFIG.read_text())
    data["model"].update(
        {"embedding_dim": 4, "mlp": [16, 8], "tower": [4], "expert_mlp": [8], "num_experts": 2,
         "specific_experts": 1, "shared_experts": 1}
    )
    data["model"].update(model_overrides)
    data["training"].update({"batch_size": 256, "epochs": 1})
    # the curated schema sits next to the default config; tests write configs elsewhere
    data["pipeline"]["schema_file"] = str(VIDEO_CONFIG.parent / data["pipeline"]["schema_file"])
    return data


@pytest.fixture
def tiny_config():
    from models.config import parse_config

    return parse_config(tiny_config_dict())


@pytest.fixture(scope="session")
def small_frame():
    """2 days x 1500 rows of synthetic logs, cleaned and typed like read_logs output."""
    import pandas as pd

    from data.synthetic import generate_days

    frames = []
    for day, f in generate_days(2, 1500, seed=3, with_truth=True):
        f["day"] = day
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    for c in ("duration", "hour", "click", "watch_seconds"):
        frame[c] = frame[c].astype(float)
    frame["hour"] = frame["hour"].astype(int).astype(str)
    return frame


@pytest.fixture
def prepared(tiny_config, small_frame):
    """(config, tables, Split) ready to train on."""
    from models.features import FeatureEncoder, embedding_tables, fit_stats
    from models.training import prepare_split

    stats = fit_stats(small_frame, tiny_config)
    enc = FeatureEncoder(tiny_config.model_dump_json(), stats.to_json())
    return tiny_config, embedding_tables(tiny_config, stats), prepare_split(small_frame, tiny_config, enc)
