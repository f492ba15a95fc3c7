"""Placeholder: filled by its owner in this session (mounted by `register(app)`)."""
import typer


def register(app: typer.Typer) -> None:
    """Mount these commands on the `soma` app."""
