"""The `soma` command line. Each command group lives in its own module and is mounted here."""
import typer

from soma_ray.cli import board, challenge, localnet, model, play, simulate, testnet, wallet

app = typer.Typer(help="soma-ray: the SOMA network on Ray.", no_args_is_help=True)
app.add_typer(wallet.app, name="wallet")
app.add_typer(model.app, name="model")
simulate.register(app)
localnet.register(app)  # before testnet: it makes the `start` group testnet adds to
testnet.register(app)
play.register(app)
challenge.register(app)
board.register(app)
