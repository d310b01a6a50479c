"""Names shared by the ClientApp and the ServerApp's strategy (kept import-free)."""

INFO_KEY = "info"  # ConfigRecord in every reply: {"region": name}


class Refusal(Exception):
    """A region declines a task for a reason it states (its policy, its data, its privacy
    budget). The ClientApp replies with the reason as the message's error, in one line."""
