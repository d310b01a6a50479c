"""Names shared by the ClientApp and the ServerApp's strategy (kept import-free)."""

INFO_KEY = "info"  # ConfigRecord in every reply: {"region": name}
# one message per round (FLAME_EVALUATE_IN_TRAIN): the train task's config asks the region to
# score the model it received first; the train reply carries that as a second MetricRecord
EVALUATE_FIRST = "evaluate-first"
VALIDATION_KEY = "validation"


class Refusal(Exception):
    """A region declines a task for a reason it states (its policy, its data, its privacy
    budget). The ClientApp replies with the reason as the message's error, in one line."""


# how a ServerApp's refusal of the run's settings or data begins (its exception, which Flower keeps
# in the run's status details: main.py reports it as bad input, not as a failed run)
BAD_INPUT = "bad input: "
DIVERGED_REASON = "training diverged"  # how a region's error reply says its training diverged


class RunFailed(RuntimeError):
    """The run stops without a model worth saving; the message says why in one line."""


class RunDiverged(RunFailed):
    """A region's training, or the aggregated model, diverged: the run stops, saving nothing."""


class RunLearntNothing(RunFailed):
    """The model to be saved gives every server test row the same score: a dead network."""
