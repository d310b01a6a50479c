"""The fraud model: a small MLP over the fixed feature set, plus its saved form."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn


class FraudMLP(nn.Module):
    """Tabular MLP: Linear -> ReLU -> Dropout blocks, one logit out."""

    def __init__(self, in_features: int, hidden: list[int] | tuple[int, ...] = (64, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(0.1)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@dataclass
class ModelCard:
    """Everything needed to use a saved model besides its weights."""

    feature_names: list[str]
    drop_balance_features: bool
    hidden_sizes: list[int]
    threshold: float
    feature_version: int
    metrics: dict[str, float] = field(default_factory=dict)
    selected_round: int = 0  # the round whose global model this is (0: initial / central)
    pretrained_rows: int = 0  # synthetic rows of the warm start (0: random initial weights)
    alert_rate: float = 0.0  # the alert budget the threshold was chosen for (0: F1-optimal)
    # the selected model's pooled validation score histogram (probability edges, counts): the
    # scorer's drift reference
    validation_score_edges: list[float] = field(default_factory=list)
    validation_score_counts: list[float] = field(default_factory=list)


def new_card(drop_balances: bool, hidden_sizes: list[int], threshold: float) -> ModelCard:
    """The card of a model about to be trained (threshold 0 = to be tuned; 0.5 until then)."""
    from flame.data.features import FEATURE_VERSION, feature_names

    return ModelCard(
        feature_names(drop_balances), drop_balances, hidden_sizes, threshold or 0.5, FEATURE_VERSION
    )


def build_model(card: ModelCard, seed: int | None = None) -> FraudMLP:
    if seed is not None:
        torch.manual_seed(seed)
    return FraudMLP(len(card.feature_names), card.hidden_sizes)


def save_model(path: Path, model: nn.Module, card: ModelCard) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "card": asdict(card)}, path)


class ModelFileError(ValueError):
    """A file that is not a usable Flame model (one line, naming the file)."""


def load_model(path: Path) -> tuple[FraudMLP, ModelCard]:
    """The model and card saved at ``path`` (loading never runs code: ``weights_only``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, not a zip, pickled code, ...
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path} is not a Flame model file ({reason})") from None
    if not isinstance(saved, dict) or not {"card", "state_dict"} <= set(saved):
        raise ModelFileError(f"{path} is not a Flame model file (no model card and weights)")
    try:
        card = ModelCard(**saved["card"])
    except TypeError as err:
        raise ModelFileError(
            f"{path}: its model card is not one this Flame reads ({err})"
        ) from None
    if not math.isfinite(card.threshold) or not 0 <= card.threshold <= 1:
        raise ModelFileError(f"{path}: its decision threshold {card.threshold} is not in [0, 1]")
    model = build_model(card)
    try:
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[-1].strip()[:200]
        raise ModelFileError(
            f"{path}: its weights do not match its card ({len(card.feature_names)} features, "
            f"hidden {card.hidden_sizes}): {first}"
        ) from None
    model.eval()
    return model, card
