"""Synthetic click/view logs: the project's embedded default data.

The generator is a fixed, documented simulation of a short-video feed (see
docs/data.md). It was fixed when the foundation landed and must
not be retuned so that a model wins. Ground truth comes from latent user/video
factors with

* a **shared part**: true interest ``s = <u, v>`` drives both click and watch ratio;
* **task-specific, conflicting parts**: "bait" (click-bait titles, flashy covers)
  raises click probability and lowers the watch ratio; long videos lower the watch
  ratio but not the click; page/hour are click-only context effects; user age is a
  watch-only (patience) effect.

Each row is one impression. ``watch_seconds`` is 0 when not clicked.

Scenario ``purchase`` (e-commerce, ``--scenario purchase``) is the same world read as a shop:
every row also carries ``purchase`` (0/1, only after a click; about 1-3% of clicks), driven by
the shared interest and by item and user effects, with click bait *strongly* lowering the
purchase probability (a click-bait listing gets clicks and returns no sales). Its constants are
``GeneratorParams.purchase_*``, fixed before any model was trained on it. The video columns are
unchanged by the scenario (the purchase draw uses its own random stream). With
``with_truth=True`` the columns ``true_ctr`` (click probability) and ``true_cvr``
(expected clipped watch ratio given a click) are added, for an oracle bound and
offline ranking simulation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pandas as pd

COLUMNS = [
    "request_id",
    "user_id",
    "video_id",
    "age_bucket",
    "gender",
    "interests",
    "video_category",
    "tags",
    "uploader_id",
    "duration",
    "cover_quality",
    "title_style",
    "hour",
    "page",
    "click",
    "watch_seconds",
]
TRUTH_COLUMNS = ["true_ctr", "true_cvr"]
SCENARIOS = ("video", "purchase")
PURCHASE_COLUMN = "purchase"

AGE_BUCKETS = ["<18", "18-24", "25-34", "35-44", "45-54", "55+"]
GENDERS = ["f", "m", "u"]
PAGES = ["home", "related", "search", "channel"]
COVERS = ["low", "standard", "high", "flashy"]
TITLES = ["plain", "question", "clickbait"]


@dataclasses.dataclass(frozen=True)
class GeneratorParams:
    """Every constant of the simulation. Documented in docs/data.md; do not retune."""

    n_users: int = 20_000
    n_videos: int = 6_000
    n_uploaders: int = 800
    n_categories: int = 20
    n_topics: int = 40
    latent_dim: int = 8
    impressions_per_request: int = 8
    candidates_per_request: int = 40
    # click model (logit)
    click_bias: float = -2.8
    click_interest: float = 1.0
    click_bait: float = 0.9
    click_cover_high: float = 0.35
    click_cover_low: float = -0.35
    click_uploader: float = 0.3
    click_user_sd: float = 0.4
    click_page: tuple = (0.0, 0.2, 0.7, 0.3)  # home, related, search, channel
    click_evening: float = 0.15
    # watch-ratio model (logit of the mean ratio given a click)
    watch_bias: float = 0.3
    watch_interest: float = 1.0
    watch_bait: float = -1.1
    watch_log_duration: float = -0.7  # per log(duration / 120 s)
    watch_cover_high: float = 0.3
    watch_uploader: float = 0.5
    watch_user_sd: float = 0.3
    watch_age: tuple = (-0.3, -0.2, 0.0, 0.1, 0.2, 0.3)  # patience by age bucket
    watch_concentration: float = 4.0  # Beta(m*k, (1-m)*k) noise around the mean
    bounce_rate: float = 0.08  # baseline probability of a 1-5 s bounce after a click
    bounce_bait: float = 0.25  # extra bounce probability per unit of bait
    replay_rate: float = 0.05  # P(watch longer than the video | click) = replay_rate * mean
    # bait per video
    bait_clickbait: float = 1.0
    bait_question: float = 0.4
    bait_flashy: float = 0.8
    # purchase scenario (logit of P(purchase | click)); fixed before any model saw the data
    purchase_bias: float = -5.6
    purchase_interest: float = 1.2
    purchase_bait: float = -1.6  # click bait: more clicks (click_bait > 0), far fewer purchases
    purchase_cover_high: float = 0.2
    purchase_uploader: float = 0.8  # seller quality
    purchase_log_duration: float = -0.3  # per log(duration / 120 s): the item's price proxy
    purchase_age: tuple = (-0.6, -0.2, 0.1, 0.3, 0.3, 0.2)  # buying power by age bucket
    purchase_user_sd: float = 0.5
    # drift (used by daily-retraining tests): from drift_day on, user interests move
    drift: float = 0.0
    drift_day: int = 2


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class _World:
    """The fixed population of users and videos (depends on the seed only)."""

    def __init__(self, p: GeneratorParams, seed: int):
        rng = np.random.default_rng(seed)
        K = p.latent_dim
        self.topics = rng.normal(size=(p.n_topics, K))
        # users: a mixture of 3 favourite topics
        fav = rng.integers(0, p.n_topics, size=(p.n_users, 3))
        w = rng.dirichlet([1.0, 1.0, 1.0], size=p.n_users)
        self.user_vec = (self.topics[fav] * w[..., None]).sum(1) + 0.5 * rng.normal(size=(p.n_users, K))
        order = np.argsort(-w, axis=1)
        fav_sorted = np.take_along_axis(fav, order, axis=1)
        n_obs = rng.integers(1, 4, size=p.n_users)  # observable interests: 1-3 of them
        noise_topic = rng.integers(0, p.n_topics, size=p.n_users)
        self.interests = np.array(
            [
                "|".join(
                    f"t{t:02d}"
                    for t in dict.fromkeys(
                        list(fav_sorted[i, : n_obs[i]]) + ([noise_topic[i]] if rng.random() < 0.2 else [])
                    )
                )
                for i in range(p.n_users)
            ],
            dtype=object,
        )
        self.age = rng.choice(len(AGE_BUCKETS), size=p.n_users, p=[0.08, 0.25, 0.3, 0.18, 0.11, 0.08])
        self.gender = rng.choice(len(GENDERS), size=p.n_users, p=[0.45, 0.45, 0.10])
        self.user_click = rng.normal(0, p.click_user_sd, size=p.n_users)
        self.user_watch = rng.normal(0, p.watch_user_sd, size=p.n_users)
        # own stream: the video world (and its logs) are the same with or without the scenario
        self.user_buy = np.random.default_rng([seed, 0, 7]).normal(0, p.purchase_user_sd, size=p.n_users)
        self.user_activity = rng.zipf(1.6, size=p.n_users).clip(1, 200).astype(float)
        self.user_activity /= self.user_activity.sum()

        # videos
        cat_topics = rng.integers(0, p.n_topics, size=(p.n_categories, 3))
        self.category = rng.integers(0, p.n_categories, size=p.n_videos)
        n_tags = rng.integers(1, 4, size=p.n_videos)
        tags = []
        vecs = np.zeros((p.n_videos, K))
        for j in range(p.n_videos):
            ts = list(
                dict.fromkeys(
                    [int(cat_topics[self.category[j], rng.integers(0, 3)])]
                    + list(rng.integers(0, p.n_topics, size=n_tags[j] - 1))
                )
            )
            tags.append("|".join(f"t{t:02d}" for t in ts))
            vecs[j] = self.topics[ts].mean(0)
        self.tags = np.array(tags, dtype=object)
        self.video_vec = vecs + 0.5 * rng.normal(size=(p.n_videos, K))
        cat_median = np.exp(rng.uniform(np.log(30), np.log(600), size=p.n_categories))
        self.duration = np.clip(
            np.round(cat_median[self.category] * np.exp(rng.normal(0, 0.6, size=p.n_videos))), 5, 3600
        )
        self.uploader = rng.integers(0, p.n_uploaders, size=p.n_videos)
        self.uploader_quality = rng.normal(0, 0.5, size=p.n_uploaders)
        self.cover = rng.choice(len(COVERS), size=p.n_videos, p=[0.15, 0.5, 0.2, 0.15])
        self.title = rng.choice(len(TITLES), size=p.n_videos, p=[0.6, 0.25, 0.15])
        self.bait = (
            p.bait_clickbait * (self.title == 2) + p.bait_question * (self.title == 1) + p.bait_flashy * (self.cover == 3)
        )
        pop = rng.zipf(1.4, size=p.n_videos).clip(1, 1000).astype(float)
        self.popularity = pop / pop.sum()


def _day_frame(world: _World, p: GeneratorParams, day_index: int, n_rows: int, rng, first_request: int) -> pd.DataFrame:
    R = -(-n_rows // p.impressions_per_request)
    C, I = p.candidates_per_request, p.impressions_per_request
    users = rng.choice(p.n_users, size=R, p=world.user_activity)
    uvec = world.user_vec[users]
    if p.drift > 0 and day_index >= p.drift_day:
        # interests drift towards a per-user random direction, stronger each day
        shift = np.random.default_rng(12345).normal(size=world.user_vec.shape)[users]
        d = min(1.0, p.drift * (day_index - p.drift_day + 1))
        uvec = (1 - d) * uvec + d * shift
    cand = rng.choice(p.n_videos, size=(R, C), p=world.popularity)
    s_cand = np.einsum("rk,rck->rc", uvec, world.video_vec[cand]) / np.sqrt(p.latent_dim)
    # the recommender's candidate ranking is itself a noisy view of interest
    score = s_cand + rng.gumbel(size=(R, C))
    top = np.argsort(-score, axis=1)[:, :I]
    vids = np.take_along_axis(cand, top, axis=1).reshape(-1)[:n_rows]
    s = np.take_along_axis(s_cand, top, axis=1).reshape(-1)[:n_rows]
    req = np.repeat(np.arange(R), I)[:n_rows]
    u = users[req]
    page = rng.choice(len(PAGES), size=R, p=[0.5, 0.25, 0.1, 0.15])[req]
    hour_p = np.array([1, 1, 0.5, 0.3, 0.3, 0.4, 0.8, 1.2, 1.4, 1.3, 1.2, 1.3, 1.6, 1.4, 1.3, 1.3, 1.4, 1.6, 2.0, 2.4, 2.6, 2.4, 1.9, 1.4])
    hour = rng.choice(24, size=R, p=hour_p / hour_p.sum())[req]

    cover, title, bait = world.cover[vids], world.title[vids], world.bait[vids]
    up = world.uploader[vids]
    duration = world.duration[vids]
    click_logit = (
        p.click_bias
        + p.click_interest * s
        + p.click_bait * bait
        + p.click_cover_high * (cover == 2)
        + p.click_cover_low * (cover == 0)
        + p.click_uploader * world.uploader_quality[up]
        + np.asarray(p.click_page)[page]
        + p.click_evening * ((hour >= 18) & (hour <= 22))
        + world.user_click[u]
    )
    true_ctr = _sigmoid(click_logit)
    click = (rng.random(n_rows) < true_ctr).astype(np.int64)

    mean_ratio = _sigmoid(
        p.watch_bias
        + p.watch_interest * s
        + p.watch_bait * bait
        + p.watch_log_duration * np.log(duration / 120.0)
        + p.watch_cover_high * (cover == 2)
        + p.watch_uploader * world.uploader_quality[up]
        + np.asarray(p.watch_age)[world.age[u]]
        + world.user_watch[u]
    )
    k = p.watch_concentration
    ratio = rng.beta(np.maximum(mean_ratio * k, 1e-3), np.maximum((1 - mean_ratio) * k, 1e-3))
    p_bounce = np.clip(p.bounce_rate + p.bounce_bait * bait, 0, 0.9)
    bounce = rng.random(n_rows) < p_bounce
    bounce_sec = rng.uniform(1, 5, size=n_rows)
    ratio = np.where(bounce, np.minimum(bounce_sec / duration, 1.0), ratio)
    p_replay = p.replay_rate * mean_ratio
    replay = (~bounce) & (rng.random(n_rows) < p_replay)
    ratio = np.where(replay, 1.0 + rng.uniform(0, 1, size=n_rows), ratio)
    watch = np.where(click == 1, np.round(ratio * duration, 1), 0.0)
    # expected clipped ratio given a click (the CVR label's expectation)
    bounce_mean = np.minimum(3.0 / duration, 1.0)
    true_cvr = (1 - p_bounce) * (p_replay + (1 - p_replay) * mean_ratio) + p_bounce * bounce_mean
    # purchase scenario: P(purchase | click), deterministic here (drawn in generate_days)
    p_purchase = _sigmoid(
        p.purchase_bias
        + p.purchase_interest * s
        + p.purchase_bait * bait
        + p.purchase_cover_high * (cover == 2)
        + p.purchase_uploader * world.uploader_quality[up]
        + p.purchase_log_duration * np.log(duration / 120.0)
        + np.asarray(p.purchase_age)[world.age[u]]
        + world.user_buy[u]
    )

    return pd.DataFrame(
        {
            "request_id": [f"r{first_request + r}" for r in req],
            "user_id": [f"u{x}" for x in u],
            "video_id": [f"v{x}" for x in vids],
            "age_bucket": np.asarray(AGE_BUCKETS, dtype=object)[world.age[u]],
            "gender": np.asarray(GENDERS, dtype=object)[world.gender[u]],
            "interests": world.interests[u],
            "video_category": [f"c{x:02d}" for x in world.category[vids]],
            "tags": world.tags[vids],
            "uploader_id": [f"up{x}" for x in up],
            "duration": duration.astype(np.int64),
            "cover_quality": np.asarray(COVERS, dtype=object)[cover],
            "title_style": np.asarray(TITLES, dtype=object)[title],
            "hour": hour.astype(np.int64),
            "page": np.asarray(PAGES, dtype=object)[page],
            "click": click,
            "watch_seconds": watch,
            "true_ctr": true_ctr,
            "true_cvr": true_cvr,
            "_p_purchase": p_purchase,
        }
    )


def generate_days(
    days: int,
    rows_per_day: int,
    seed: int = 0,
    start_date: str = "20260101",
    with_truth: bool = False,
    params: GeneratorParams | None = None,
    scenario: str = "video",
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield ``(YYYYMMDD, frame)`` for each simulated day.

    ``scenario``: ``video`` (the default logs) or ``purchase`` (adds ``purchase``; its
    ``true_cvr`` is P(purchase | click)).
    """
    if days < 1 or rows_per_day < 1:
        raise ValueError("days and rows_per_day must be >= 1")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {list(SCENARIOS)}")
    p = params or GeneratorParams()
    world = _World(p, seed)
    start = dt.datetime.strptime(start_date, "%Y%m%d").date()
    first_request = 0
    for d in range(days):
        rng = np.random.default_rng([seed, d + 1])
        frame = _day_frame(world, p, d, rows_per_day, rng, first_request)
        first_request += -(-rows_per_day // p.impressions_per_request)
        p_purchase = frame.pop("_p_purchase").to_numpy()
        if scenario == "purchase":
            draw = np.random.default_rng([seed, d + 1, 7]).random(len(frame))
            frame[PURCHASE_COLUMN] = ((frame["click"].to_numpy() == 1) & (draw < p_purchase)).astype(np.int64)
            frame["true_cvr"] = p_purchase
            frame = frame[[c for c in frame.columns if c not in TRUTH_COLUMNS] + TRUTH_COLUMNS]
        if not with_truth:
            frame = frame.drop(columns=TRUTH_COLUMNS)
        yield (start + dt.timedelta(days=d)).strftime("%Y%m%d"), frame


def _write_tfrecord(frame: pd.DataFrame, path: Path) -> None:
    import tensorflow as tf  # lazy: CSV generation does not need TensorFlow

    def feat(v):
        if isinstance(v, (int, np.integer)):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
        if isinstance(v, (float, np.floating)):
            return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode()]))

    with tf.io.TFRecordWriter(str(path)) as w:
        cols = list(frame.columns)
        for row in frame.itertuples(index=False):
            ex = tf.train.Example(features=tf.train.Features(feature={c: feat(v) for c, v in zip(cols, row)}))
            w.write(ex.SerializeToString())


def write_logs(
    out: str | Path,
    days: int,
    rows_per_day: int,
    seed: int = 0,
    start_date: str = "20260101",
    fmt: Literal["csv", "tfrecord", "parquet"] = "csv",
    rows_per_file: int = 100_000,
    with_truth: bool = False,
    params: GeneratorParams | None = None,
    progress=None,
    scenario: str = "video",
) -> list[Path]:
    """Write ``out/YYYYMMDD/part-NNNNN.<fmt>`` for each day; returns the written files.

    Each file is written to a temporary name and renamed, so a killed run never
    leaves a half-written part that looks complete.
    """
    out = Path(out)
    written: list[Path] = []
    ext = {"csv": "csv", "tfrecord": "tfrecord", "parquet": "parquet"}[fmt]
    for day, frame in generate_days(days, rows_per_day, seed, start_date, with_truth, params, scenario):
        day_dir = out / day
        day_dir.mkdir(parents=True, exist_ok=True)
        for i, lo in enumerate(range(0, len(frame), rows_per_file)):
            part = frame.iloc[lo : lo + rows_per_file]
            final = day_dir / f"part-{i:05d}.{ext}"
            tmp = day_dir / f".tmp-part-{i:05d}.{ext}"
            if fmt == "csv":
                part.to_csv(tmp, index=False, float_format="%.6g")
            elif fmt == "parquet":
                part.to_parquet(tmp, index=False)
            else:
                _write_tfrecord(part, tmp)
            tmp.replace(final)
            written.append(final)
        if progress is not None:
            progress(day, len(frame))
    return written
