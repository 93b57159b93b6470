"""Commands: every write as an object, run by the command service."""
