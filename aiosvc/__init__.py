"""aiosvc: AI-agent sessions behind one HTTP API."""

__version__ = "0.1.0"
