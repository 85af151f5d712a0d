"""NCP/LTC strategy model: dual-branch network over daily features and early-session candles."""
