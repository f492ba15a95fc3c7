"""`soma simulate` runs a scripted localnet and reports a conserved supply."""
import typer
from typer.testing import CliRunner

from soma_ray.cli import simulate


def test_simulate_runs_and_reports_supply_ok():
    app = typer.Typer()
    app.add_typer(simulate.app)
    app.command("noop")(lambda: None)  # a second command keeps `simulate` a named subcommand
    result = CliRunner().invoke(app, ["simulate", "--epochs", "3", "--checkpoints-per-epoch", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(line.startswith("checkpoint") for line in lines) == 6
    assert sum(line.startswith("epoch") for line in lines) == 3
    assert "Settled=" in lines[-2] and "Filled=" in result.output
    assert lines[-1].startswith("final: epoch 3") and "supply OK" in lines[-1]
