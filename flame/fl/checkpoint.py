"""Per-round checkpoints of the ServerApp, and finding the run to resume.

After every completed round the ServerApp writes ``<run folder>/checkpoint/``: the global model
(``arrays.npz``) and ``state.json`` (the round, the tuned threshold and the run's settings that
must not change on resume). Both are replaced atomically, so a crash at any moment leaves the
last completed round. A run started with FLAME_RESUME=true continues from it, in the same folder
(same metrics.csv, same MLflow run).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flame.files import atomic_dir, old_copy, writable_folder
from flame.settings import FlameSettings, SettingsError, TrackingSettings

FOLDER = "checkpoint"
# settings a resumed run must share with the run it continues
FIXED = (
    "regions", "hidden_sizes", "drop_balance_features", "aggregation", "codec", "seed",
    "pretrain_rows", "evaluate_in_train", "alert_rate",
)  # fmt: skip


@dataclass
class Checkpoint:
    round: int
    threshold: float
    fixed: dict[str, object]
    selected_round: int = 0  # the best round so far by validation (its weights: selected.npz)
    selected_threshold: float = 0.5
    selected_val_pr_auc: float = float("nan")
    selected_val_counts: list[float] = field(default_factory=list)  # its validation histogram


def fixed_settings(settings: FlameSettings) -> dict[str, object]:
    return {k: v for k, v in settings.model_dump(mode="json").items() if k in FIXED}


def save(
    folder: Path,
    state: Checkpoint,
    arrays: dict[str, np.ndarray],
    selected: dict[str, np.ndarray] | None = None,
) -> None:
    for stale in folder.glob(f".{FOLDER}.*.tmp"):  # staging of a ServerApp killed mid-save
        shutil.rmtree(stale, ignore_errors=True)  # (a run folder has one ServerApp)
    with atomic_dir(folder / FOLDER, replace=True) as staging:
        np.savez(staging / "arrays.npz", **arrays)
        if selected is not None:
            np.savez(staging / "selected.npz", **selected)
        (staging / "state.json").write_text(json.dumps(asdict(state), indent=2))


def load(
    folder: Path,
) -> tuple[Checkpoint, dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """The checkpoint's state, last global model and selected model (if any)."""
    target = folder / FOLDER
    if not (target / "state.json").exists() and old_copy(target).exists():
        target = old_copy(target)  # crashed between the two renames
    state = Checkpoint(**json.loads((target / "state.json").read_text()))
    return state, _npz(target / "arrays.npz"), _npz(target / "selected.npz")


def _npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def check_new_folder(out: Path) -> None:
    """A new run's folder is writable, and never an earlier run's (its model, CSV or checkpoint)."""
    writable_folder(out, "FLAME_OUT_DIR (--out)")
    earlier = [n for n in ("model.pt", "metrics.csv", FOLDER) if (out / n).exists()]
    if earlier:
        raise SettingsError(
            f"FLAME_OUT_DIR {out} holds an earlier run ({', '.join(earlier)}); choose a new "
            "folder, or FLAME_RESUME=true to continue that run"
        )


def resume_folder(settings: TrackingSettings) -> Path:
    """FLAME_OUT_DIR if set, else the newest run under FLAME_RUNS_DIR that has a checkpoint."""
    if settings.out_dir is not None:
        if not (settings.out_dir / FOLDER / "state.json").exists():
            raise SettingsError(f"FLAME_RESUME: {settings.out_dir} holds no checkpoint to resume")
        return settings.out_dir
    runs = sorted(
        (p.parent.parent for p in settings.runs_dir.glob(f"*/{FOLDER}/state.json")),
        key=lambda p: (p / FOLDER / "state.json").stat().st_mtime,
    )
    if not runs:
        raise SettingsError(f"FLAME_RESUME: no run with a checkpoint under {settings.runs_dir}")
    return runs[-1]


def check_compatible(state: Checkpoint, settings: FlameSettings, folder: Path) -> None:
    now = fixed_settings(settings)
    changed = [k for k in FIXED if state.fixed.get(k) != now.get(k)]
    if changed:
        names = ", ".join(f"FLAME_{k.upper()}" for k in changed)
        raise SettingsError(f"FLAME_RESUME: {names} differ from the run in {folder}")
    if settings.dp:
        raise SettingsError(
            "FLAME_RESUME with FLAME_DP is not supported: a region's ledger accounts a run by its "
            "Flower run id, and a resumed run is a new one, so it would report (and cap) less "
            "than the whole run's ε; its lifetime ε would still be right"
        )
