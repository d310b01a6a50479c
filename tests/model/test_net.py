"""flame/model/net.py: the model, its card, and a model file that is refused by name."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from flame.data.features import FEATURE_VERSION, feature_names
from flame.model.net import ModelFileError, build_model, load_model, new_card, save_model
from flame.model.score import load_scorer


def test_a_new_card_describes_the_feature_set_it_is_trained_on() -> None:
    default, with_balances = new_card(True, [8], 0.0), new_card(False, [8], 0.3)
    assert default.feature_names == feature_names(drop_balances=True)
    assert with_balances.feature_names == feature_names(drop_balances=False)
    assert default.threshold == 0.5 and with_balances.threshold == 0.3  # 0: tuned later
    assert default.feature_version == FEATURE_VERSION
    model = build_model(with_balances, seed=1)
    assert model.net[0].in_features == len(with_balances.feature_names)


def test_the_same_seed_gives_the_same_initial_weights() -> None:
    card = new_card(True, [16, 8], 0.0)
    a, b, c = build_model(card, seed=3), build_model(card, seed=3), build_model(card, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def _saved(tmp_path: Path, **card_changes: object) -> Path:
    card = new_card(True, [8], 0.4)
    for key, value in card_changes.items():
        setattr(card, key, value)
    save_model(tmp_path / "model.pt", build_model(new_card(True, [8], 0.4), seed=0), card)
    return tmp_path / "model.pt"


def test_a_file_that_is_not_a_usable_model_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(tmp_path / "none.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ModelFileError, match=r"text\.pt is not a Flame model file"):
        load_model(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="no model card and weights"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match=r"threshold 1\.5 is not in"):
        load_model(_saved(tmp_path, threshold=1.5))
    with pytest.raises(ModelFileError, match="weights do not match its card"):
        load_model(_saved(tmp_path, hidden_sizes=[4]))


def test_loading_a_model_never_runs_code_from_the_file(tmp_path: Path) -> None:
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (ran.write_text, ("pwned",))

    with (tmp_path / "evil.pt").open("wb") as out:
        pickle.dump({"card": Payload(), "state_dict": {}}, out, protocol=2)
    with pytest.raises(ModelFileError, match=r"evil\.pt is not a Flame model file"):
        load_model(tmp_path / "evil.pt")
    assert not ran.exists()


def test_a_model_of_another_feature_version_is_refused_for_scoring(tmp_path: Path) -> None:
    path = _saved(tmp_path, feature_version=FEATURE_VERSION - 1)
    load_model(path)  # the file itself is fine
    with pytest.raises(ValueError, match=f"feature version {FEATURE_VERSION - 1}"):
        load_scorer(path)
