"""The schema's migrations: numbered SQL files shipped with the package."""

from __future__ import annotations

from importlib import resources


def migrations() -> list[tuple[int, str, str]]:
    """Return the numbered SQL migrations shipped with the package, in order."""
    folder = resources.files("aiosvc.store.migrations")
    steps = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            steps.append((number, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(steps)


def schema_version() -> int:
    """The schema version this code writes."""
    return migrations()[-1][0]


def split_sql(script: str) -> list[str]:
    """Split a migration script into statements (our migrations have no ';' in literals)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]
