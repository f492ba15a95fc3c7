"""The `soma` command line: one module per command group, each holding that group's commands in
its `app` (a named group, or top-level commands), mounted here once, in any order.

    wallet.py     soma wallet new|list|address|export|import|set-default|switch
    account.py    soma faucet | balance | transfer
    start.py      soma start localnet|scoring|testnet
    network.py    soma stop | status                          (the operator's, over Ray)
    chains.py     soma network add|list|remove                (named networks: --chain NAME)
    testnet.py    soma testnet restart            (and the testnet file `start testnet` reads)
    epoch.py      soma epoch advance
    target.py     soma target list|info|claim
    data.py       soma score, soma submit [FILE] | commit|reveal|list|info|claim-bond, soma data download
    stake.py      soma stake add|withdraw|list
    validator.py  soma validator list
    challenge.py  soma verify, soma challenge initiate|list|info
    board.py      soma board
    model.py      soma model train|create|commit|reveal|publish|list|info|download|stake|deactivate|
                             update-commit|update-reveal
    simulate.py   soma simulate
"""
import typer

from soma_ray.cli import (account, board, chains, challenge, data, epoch, model, network, simulate, stake,
                          start, target, testnet, validator, wallet)
from soma_ray.cli.common import add_chain_options

app = typer.Typer(help="soma-ray: the SOMA network on Ray.", no_args_is_help=True)
for group in (wallet, account, start, network, chains, testnet, epoch, target, data, stake, validator,
              challenge, board, model, simulate):
    app.add_typer(group.app)
add_chain_options(app)  # every command that takes --rpc-url takes --chain NAME too
