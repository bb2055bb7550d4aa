"""``ncs inspect``: what a pushed SavedModel offers, like ``saved_model_cli show --all``.

Prints every signature's inputs and outputs (dtype, shape, tensor name) and what the
trainer stored under ``assets.extra/ncs/``: the variant, training summary and, for sparse
variants, the mask analytics (per-layer density, shared / task-only / unused fractions).
"""

from __future__ import annotations

import json
from pathlib import Path

from serving.export import ASSETS_EXTRA


def resolve_model_dir(path: str | Path) -> Path:
    """A SavedModel folder, or a TF Serving base folder (its newest numeric version)."""
    p = Path(path)
    if (p / "saved_model.pb").exists():
        return p
    if (p / "Format-Serving" / "saved_model.pb").exists():
        return p / "Format-Serving"
    versions = sorted((d for d in p.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)) if p.is_dir() else []
    for d in reversed(versions):
        if (d / "saved_model.pb").exists():
            return d
    raise FileNotFoundError(f"{p}: no saved_model.pb here, in Format-Serving/ or in a numeric version folder")


def _spec_line(name: str, spec) -> str:
    shape = "(" + ", ".join("-1" if d is None else str(d) for d in spec.shape.as_list()) + ")" if spec.shape.rank is not None else "unknown"
    return f"    {name}: dtype {spec.dtype.name}, shape {shape}"


def describe(model_dir: str | Path) -> str:
    import tensorflow as tf

    model_dir = resolve_model_dir(model_dir)
    loaded = tf.saved_model.load(str(model_dir))
    lines = [f"SavedModel: {model_dir}", ""]
    for name in sorted(loaded.signatures):
        fn = loaded.signatures[name]
        lines.append(f"signature_def['{name}']:")
        lines.append("  inputs:")
        for k, spec in sorted(fn.structured_input_signature[1].items()):
            lines.append(_spec_line(k, spec))
        lines.append("  outputs:")
        for k, spec in sorted(fn.structured_outputs.items()):
            lines.append(_spec_line(k, spec))
        lines.append("")
    extra = model_dir / ASSETS_EXTRA
    cfg_file = extra / "config.json"
    if cfg_file.exists():
        cfg = json.loads(cfg_file.read_text())
        rk = cfg.get("ranking") or {}
        lines.append(
            f"model: variant {cfg['model']['variant']}, tasks {[t['name'] for t in cfg['tasks']]}, MLP {cfg['model']['mlp']}; "
            f"rank_score = {rk.get('ctr_task', 'ctr')}^{rk.get('a', 1):g} * {rk.get('cvr_task', 'cvr')}^{rk.get('b', 1):g} * "
            f"{rk.get('length_column', 'length')}^{rk.get('c', 1):g}"
        )
    summary_file = extra / "training_summary.json"
    if summary_file.exists():
        s = json.loads(summary_file.read_text())
        metrics = ", ".join(f"{t} " + " ".join(f"{k} {v:.5f}" for k, v in m.items() if k in ("auc", "mse")) for t, m in s.get("valid_metrics", {}).items())
        lines.append(f"training: {s.get('train_rows', '?')} rows in {s.get('train_seconds', float('nan')):.0f}s; validation {metrics}")
    analytics_file = extra / "mask_analytics.json"
    if analytics_file.exists():
        a = json.loads(analytics_file.read_text())
        tasks = a["tasks"]
        lines.append("")
        lines.append(f"masks ({a['structure']}): density " + ", ".join(f"{t} {a['density'][t]:.3f}" for t in tasks)
                     + "; overall " + ", ".join(f"{k} {v:.3f}" for k, v in a["overall"].items()))
        lines.append("  non-zero MLP FLOPs per example vs dense: " + ", ".join(f"{t} {a['flops_fraction'][t]:.1%}" for t in tasks))
        for layer in a["layers"]:
            lines.append(
                f"  {layer['layer']} {layer['shape'][0]}x{layer['shape'][1]}: "
                + ", ".join(f"{t} {layer['density'][t]:.3f}" for t in tasks)
                + f"; shared {layer['shared']:.3f}, unused {layer['unused']:.3f}"
            )
    return "\n".join(lines)
