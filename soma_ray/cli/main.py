"""The `soma` command line. Each command group lives in its own module and registers here."""
import typer

app = typer.Typer(help="soma-ray: the SOMA network on Ray.", no_args_is_help=True)
