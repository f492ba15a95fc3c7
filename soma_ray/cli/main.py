"""The `soma` command line. Each command group lives in its own module and is mounted here."""
import typer

from soma_ray.cli import localnet, model, simulate, wallet

app = typer.Typer(help="soma-ray: the SOMA network on Ray.", no_args_is_help=True)
app.add_typer(wallet.app, name="wallet")
app.add_typer(model.app, name="model")
simulate.register(app)
localnet.register(app)
