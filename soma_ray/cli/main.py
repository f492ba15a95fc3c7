"""The `soma` command line. Each command group lives in its own module and is mounted here."""
import typer

from soma_ray.cli import wallet

app = typer.Typer(help="soma-ray: the SOMA network on Ray.", no_args_is_help=True)
app.add_typer(wallet.app, name="wallet")
