"""From TFX artifacts (transformed examples, transform graph) to the ``models`` library's inputs."""

from __future__ import annotations

import tensorflow_transform as tft

from components.transform import vocabulary_name
from models.config import NumericFeature, ProjectConfig
from models.data import SplitStream, split_files
from models.features import embedding_tables


def vocabularies_from_transform(config: ProjectConfig, tft_output: tft.TFTransformOutput) -> dict[str, list[str]]:
    """``{table: tokens}`` of every vocabulary table, as Transform computed them."""
    return {
        f.name: [w.decode("utf-8", "replace") for w in tft_output.vocabulary_by_name(vocabulary_name(f.name))]
        for f in config.features
        if not isinstance(f, NumericFeature) and f.shared_embedding is None and f.vocab_size is not None
    }


def embedding_tables_from_transform(config: ProjectConfig, tft_output: tft.TFTransformOutput) -> dict:
    """Embedding tables sized by the vocabularies Transform computed."""
    return embedding_tables(config, vocabularies_from_transform(config, tft_output))


def stream_split(examples_uri: str | list[str], split: str, config: ProjectConfig, tft_output: tft.TFTransformOutput,
                 transform_uri: str = "", row_ids: bool = False) -> SplitStream:
    """One split of Transform's output as a :class:`SplitStream` (nothing is read into memory).

    Raises ``models.data.MissingColumnError`` naming the columns the config needs that the
    transformed examples lack, and the Transform artifact they come from.
    """
    files = split_files(examples_uri, split)
    uris = [examples_uri] if isinstance(examples_uri, str) else list(examples_uri)
    source = f"Transform artifact {transform_uri or tft_output.transform_savedmodel_dir} (examples {', '.join(uris)})"
    return SplitStream.from_feature_spec(
        files, tft_output.transformed_feature_spec(), [f.name for f in config.features], config.task_names, split,
        source, row_ids=row_ids,
    )
