import numpy as np
import pandas as pd
import pytest

from data.synthetic import COLUMNS, TRUTH_COLUMNS, generate_days, write_logs


def _frame(seed=0, days=2, rows=6000):
    return pd.concat([f for _, f in generate_days(days, rows, seed=seed, with_truth=True)], ignore_index=True)


def test_columns_rates_and_labels():
    df = _frame()
    assert list(df.columns) == COLUMNS + TRUTH_COLUMNS
    ctr = df.click.mean()
    assert 0.10 <= ctr <= 0.40
    assert (df.loc[df.click == 0, "watch_seconds"] == 0).all()
    assert (df.loc[df.click == 1, "watch_seconds"] >= 0).all() and df.loc[df.click == 1, "watch_seconds"].mean() > 10
    assert df.duration.min() >= 5 and df.true_ctr.between(0, 1).all() and df.true_cvr.between(0, 1).all()
    assert df.groupby("request_id").size().max() == 8


def test_deterministic_per_seed():
    a, b, c = _frame(1, 1, 2000), _frame(1, 1, 2000), _frame(2, 1, 2000)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_conflicting_and_shared_effects():
    """Click-bait raises CTR but lowers the watch ratio; long videos lower only the watch ratio."""
    df = _frame(days=3, rows=20000)
    clicked = df[df.click == 1]
    bait = df.title_style == "clickbait"
    assert df[bait].true_ctr.mean() > df[~bait].true_ctr.mean() + 0.05
    assert clicked[clicked.title_style == "clickbait"].true_cvr.mean() < clicked[clicked.title_style == "plain"].true_cvr.mean() - 0.1
    long = df.duration > df.duration.median()
    assert abs(df[long].true_ctr.mean() - df[~long].true_ctr.mean()) < 0.03
    assert clicked[clicked.duration > df.duration.median()].true_cvr.mean() < clicked[clicked.duration <= df.duration.median()].true_cvr.mean() - 0.1
    # shared part: true CTR and true CVR are positively correlated among plain-title, standard-cover videos
    plain = df[(df.title_style == "plain") & (df.cover_quality == "standard")]
    assert np.corrcoef(plain.true_ctr, plain.true_cvr)[0, 1] > 0.1


@pytest.mark.parametrize("fmt", ["csv", "parquet", "tfrecord"])
def test_write_logs_day_folders(tmp_path, fmt):
    files = write_logs(tmp_path, days=2, rows_per_day=300, fmt=fmt, rows_per_file=200)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        f"20260101/part-00000.{fmt}", f"20260101/part-00001.{fmt}",
        f"20260102/part-00000.{fmt}", f"20260102/part-00001.{fmt}",
    ]
    assert not list(tmp_path.rglob(".tmp-*"))


def test_purchase_scenario_rates_and_conflict():
    import numpy as np

    from data.synthetic import generate_days

    frames = [f for _, f in generate_days(2, 20_000, seed=4, with_truth=True, scenario="purchase")]
    for f in frames:
        clicked = f[f.click == 1]
        rate = clicked.purchase.mean()
        assert 0.01 <= rate <= 0.03, rate  # the stated range: 1-3% of clicks
        assert (f[f.click == 0].purchase == 0).all()  # no purchase without a click
        # the conflict: click bait raises clicks and lowers purchases
        bait = f.title_style == "clickbait"
        assert f[bait].click.mean() > f[~bait].click.mean()
        assert clicked[bait[f.click == 1]].true_cvr.mean() < 0.5 * clicked[~bait[f.click == 1]].true_cvr.mean()
    # the video columns are the same logs with or without the scenario
    video = [f for _, f in generate_days(2, 20_000, seed=4, with_truth=True)]
    for v, p in zip(video, frames):
        cols = [c for c in v.columns if c != "true_cvr"]
        assert v[cols].equals(p[cols])
    with pytest.raises(ValueError, match="unknown scenario 'shop'"):
        next(generate_days(1, 10, scenario="shop"))
    assert np.isfinite(frames[0].true_cvr).all()
