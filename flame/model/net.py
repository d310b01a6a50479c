"""The fraud model: a small MLP over the fixed feature set, plus its saved form."""

from __future__ import annotations

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


def load_model(path: Path) -> tuple[FraudMLP, ModelCard]:
    if not Path(path).exists():
        raise FileNotFoundError(f"model file not found: {path}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    card = ModelCard(**saved["card"])
    model = build_model(card)
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model, card
