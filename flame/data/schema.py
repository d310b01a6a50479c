"""The PaySim schema: 11 columns, their dtypes and allowed values."""

from __future__ import annotations

COLUMNS: tuple[str, ...] = (
    "step",
    "type",
    "amount",
    "nameOrig",
    "oldbalanceOrg",
    "newbalanceOrig",
    "nameDest",
    "oldbalanceDest",
    "newbalanceDest",
    "isFraud",
    "isFlaggedFraud",
)
TYPES: tuple[str, ...] = ("CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER")
MONEY = ("amount", "oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")
LABELS = ("isFraud", "isFlaggedFraud")
NAMES = ("nameOrig", "nameDest")
MAX_STEP = 743
# The history's TRANSFER keys are step * 1e13 + amount in cents, in an int64: amounts below
# 1e11 (100 billion) and steps up to 922,336 (105 years of hours) keep every key distinct
MAX_AMOUNT = 1e11
MAX_STEP_INDEX = (2**63 - 1) // 10**13 - 1
FRAUD_CHUNK = 10_000_000.0


class PaySimFormatError(ValueError):
    """A PaySim file does not match the schema. The message names file, column, row and value."""

    def __init__(
        self,
        path: object,
        problem: str,
        column: str | None = None,
        row: int | None = None,
        value: object = None,
    ) -> None:
        where = [str(path)]
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        if hasattr(value, "item"):  # a numpy scalar: show 'nan', not np.float64(nan)
            value = value.item()
        text = repr(value)
        text = text if len(text) <= 60 else f"{text[:50]}... ({len(str(value)):,} characters)"
        detail = f" (value {text})" if value is not None else ""
        super().__init__(f"{': '.join([', '.join(where), problem])}{detail}")
        self.path, self.column, self.row, self.value = path, column, row, value
