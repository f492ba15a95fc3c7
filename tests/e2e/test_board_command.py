"""`soma board` on a real localnet with its services: the genesis models and a hit a miner made
over HTTP; the real command (a subprocess, over the gateway only) prints every active model's
region and the hit, and draws the map into a PNG of the promised size."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from localnet_helpers import funded, with_client
from soma_ray.cli.board import PLOT_DPI, PLOT_INCHES
from soma_ray.cli.main import app
from soma_ray.protocol.crypto import show_address

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
SOMA = str(Path(sys.executable).with_name("soma"))


async def make_hit(client):
    """A miner fills an open target: (its miner, the target, the model the reveal named)."""
    miner = await funded(client, "board-miner")
    target = (await client.get_targets("open"))[0]
    data = b"data for the board"
    await client.submit_data(miner, target.id, data, await client.upload(data, signer=miner), target.model_ids[0],
                             np.frombuffer(target.embedding, "<f4"), distance_score=0.0, loss_score=2.5)
    return miner.address, target.id, target.model_ids[0]


@pytest.fixture(scope="module")
def board_run(participants_network, tmp_path_factory):
    """One validator with its services (shared: tests/e2e/conftest.py), a hit made, the board shown."""
    url = participants_network.config.public_url
    hit = with_client(url, make_hit)
    models = with_client(url, lambda client: client.get_active_models())
    plot = tmp_path_factory.mktemp("board-plot") / "board.png"
    shown = subprocess.run([SOMA, "board", "--plot", str(plot)], env={**os.environ, "SOMA_RPC_URL": url},
                           capture_output=True, text=True, timeout=300)
    return url, shown, plot, hit, models


def table_rows(output: str, title: str) -> list[list[str]]:
    """The cells of each row of the rich table titled `title` in `output`."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


def test_the_board_lists_every_active_model_and_the_hit(board_run):
    _, shown, _, (miner, _, model_id), models = board_run
    assert shown.returncode == 0, shown.stderr
    title = next(line.strip() for line in shown.stdout.splitlines() if line.strip().startswith("regions ("))
    regions = {row[0]: row for row in table_rows(shown.stdout, title)}
    assert len(models) == 3 and set(regions) == {show_address(m.model_id) for m in models}
    assert sum(int(row[5]) for row in regions.values()) == 1  # one hit, in its target's region
    wins = {row[1]: row[2] for row in table_rows(shown.stdout, "leaderboard: models")}
    assert wins == {show_address(model_id): "1"}
    hits = {row[1]: row[2] for row in table_rows(shown.stdout, "leaderboard: miners")}
    assert hits == {show_address(miner): "1"}


def test_the_map_is_a_png_of_the_promised_size(board_run):
    _, shown, plot, _, _ = board_run
    assert f"map written to {plot}" in shown.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(plot).shape
    assert (width, height) == (PLOT_INCHES[0] * PLOT_DPI, PLOT_INCHES[1] * PLOT_DPI)


def test_an_unwritable_plot_is_a_one_line_error(board_run, tmp_path):
    url = board_run[0]
    result = CliRunner().invoke(app, ["board", "--rpc-url", url, "--plot", str(tmp_path / "no-dir" / "b.png")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: cannot write")
    assert not (tmp_path / "no-dir").exists()
