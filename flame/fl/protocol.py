"""Names shared by the ClientApp and the ServerApp's strategy (kept import-free)."""

INFO_KEY = "info"  # ConfigRecord in every reply: {"region": name}
