from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flame.cli import main
from flame.data.schema import COLUMNS
from flame.data.synth import generate, write_csv
from flame.model import metrics as fm
from flame.model.net import load_model


def test_data_synth_writes_paysim(tmp_path: Path) -> None:
    assert (
        main(["data", "synth", "--rows", "3000", "--seed", "5", "--out", str(tmp_path / "s.csv")])
        == 0
    )
    frame = pd.read_csv(tmp_path / "s.csv")
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 3000


def test_bad_input_is_one_line_error_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(COLUMNS) + "\n1,PAYMENT,12x,C1,0,0,M1,0,0,0,0\n")
    model = tmp_path / "model.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "flame.cli", "score", str(bad), "--model", str(model), "--out",
         str(tmp_path / "o.csv")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.csv" in proc.stderr and "'amount'" in proc.stderr and "row 1" in proc.stderr


def test_baseline_writes_a_run_folder_that_flame_score_uses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "central"
    command = ["baseline", "--rows", "20000", "--rounds", "2", "--with-balances", "--out", str(out)]
    assert main(command) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[: printed.rindex("}") + 1])
    assert result["roc_auc"] > 0.95 and result["selected_round"] in (1, 2)
    table = pd.read_csv(out / "metrics.csv")
    assert set(table["kind"]) == {"central", "selected"}
    assert sorted(table.loc[table["stage"] == "evaluate", "round"]) == sorted(
        [1, 2, result["selected_round"]]
    )
    _, card = load_model(out / "model.pt")
    assert card.selected_round == result["selected_round"]
    assert card.pretrained_rows == 20_000  # central starts from the same warm start
    assert card.threshold == pytest.approx(result["threshold"])
    assert not card.drop_balance_features  # --with-balances
    # the default alert budget: the threshold is the selected round's validation cut closest
    # to 0.5 % alerts, the same rule as a federated run's
    counts = card.validation_score_counts
    assert card.alert_rate == 0.005 and len(card.validation_score_edges) == len(counts) + 1
    assert card.threshold == fm.budget_threshold(counts, [0] * len(counts), 0.005)
    assert 0 < result["alert_rate_at_budget"] < 0.05 and "amount_recall" in result
    csv = tmp_path / "fresh.csv"
    write_csv(generate(3_000, seed=5, fraud_rate=0.05), csv)
    assert main(["score", str(csv), "--model", str(out / "model.pt"), "--out",
                 str(tmp_path / "scored.csv"), "--report"]) == 0  # fmt: skip
    scored = capsys.readouterr().out
    report = json.loads(scored[scored.index("{") :])
    assert report["pr_auc"] > 0.5 and report["threshold"] == card.threshold
    # rows without labels: the output gets no made-up label columns, and --report is refused
    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(csv).drop(columns=["isFraud", "isFlaggedFraud"]).to_csv(unlabelled, index=False)
    assert main(["score", str(unlabelled), "--model", str(out / "model.pt"), "--out",
                 str(tmp_path / "u.csv")]) == 0  # fmt: skip
    written = pd.read_csv(tmp_path / "u.csv")
    assert "isFraud" not in written and "isFlaggedFraud" not in written
    assert len(written) == 3_000 and "fraud_probability" in written
    capsys.readouterr()
    assert main(["score", str(unlabelled), "--model", str(out / "model.pt"), "--out",
                 str(tmp_path / "u2.csv"), "--report"]) == 2  # fmt: skip
    assert "--report needs labels" in capsys.readouterr().err
    assert not (tmp_path / "u2.csv").exists()
    # --out equal to the input is refused; the input is untouched
    before = csv.read_bytes()
    assert main(["score", str(csv), "--model", str(out / "model.pt"), "--out", str(csv)]) == 2
    assert "never overwrites its input" in capsys.readouterr().err
    assert csv.read_bytes() == before


def test_a_broken_or_foreign_model_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import math

    import torch

    from flame.model.net import build_model, new_card, save_model

    csv = tmp_path / "rows.csv"
    write_csv(generate(200, seed=5, fraud_rate=0.05), csv)
    card = new_card(False, [8], 0.5)
    good = tmp_path / "good.pt"
    save_model(good, build_model(card, seed=1), card)
    saved = torch.load(good)
    (tmp_path / "junk.pt").write_bytes(b"not a model at all")
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:300])
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save(saved | {"card": saved["card"] | {"hidden_sizes": [4]}}, tmp_path / "mismatch.pt")
    torch.save(saved | {"card": saved["card"] | {"threshold": math.nan}}, tmp_path / "nan.pt")
    torch.save({"card": {"x": 1}, "state_dict": {}}, tmp_path / "foreign-card.pt")
    capsys.readouterr()
    for name in ("junk", "truncated", "tensor", "mismatch", "nan", "foreign-card"):
        model = tmp_path / f"{name}.pt"
        code = main(["score", str(csv), "--model", str(model), "--out", str(tmp_path / "o.csv")])
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.count("\n") == 1 and f"{name}.pt" in err and "Traceback" not in err, err
    assert not (tmp_path / "o.csv").exists()
