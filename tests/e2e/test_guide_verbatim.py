"""The participants' guide as written, on one localnet with its services and real genesis weights
(the `weights` network shared with test_cli_guide and test_services): its Quick Connection Test,
data submission loop and claim loop run in a process that cannot import Ray, their code as in
the guide except the network's name (a chain named with `soma network add`, pointing at the
test's gateway) and the upload (the network's blob store); then the guide's and the plan's CLI
forms (issue 21's items 5, 6 and 9) against the same network, batched."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from soma_ray.protocol.crypto import Keypair

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
SOMA_COMMAND = str(Path(sys.executable).with_name("soma"))
ID = re.compile(r"0x[0-9a-f]{64}")


@pytest.fixture(scope="module")
def home(weights_network, tmp_path_factory):
    """A user's SOMA_HOME where `soma network add testnet <gateway>` named the test's network."""
    home = tmp_path_factory.mktemp("guide-home")
    env = {**os.environ, "SOMA_HOME": str(home), "SOMA_WALLET": str(home / "wallet.json")}
    done = subprocess.run([SOMA_COMMAND, "network", "add", "testnet", weights_network.config.public_url],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return home, env


def run_without_ray(code: str, env: dict) -> subprocess.CompletedProcess:
    prelude = "import sys\nsys.modules['ray'] = None  # any import of Ray fails\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_quick_connection_test_then_data_submission_and_claim_loops_as_written(home):
    _, env = home
    key = Keypair.generate()
    code = '''
    import asyncio
    from soma_sdk import SomaClient, Keypair

    async def test():
        client = await SomaClient(chain="testnet")
        kp = Keypair.from_secret_key("YOUR_SECRET_KEY")
        await client.request_faucet(kp.address(), 50)       # `soma faucet` in the guide's step 1
        balance = await client.get_balance(kp.address())
        print(f"Connected! Balance: {balance} SOMA")
        targets = await client.get_targets(status="open")
        print(f"Open targets: {len(targets)}")

        # The data submission loop (steps 1-7), upload through the network's blob store.
        assert await client.scoring_health(), "Scoring service not running!"
        hit = None
        for i in range(6):
            data = (b"a miner's find, number %d: " % i) * 40
            for target in targets[:3]:
                manifests = await client.get_model_manifests(target)
                result = await client.score(None, manifests, target.embedding, data)
                if result.distance <= target.distance_threshold:
                    hit = (target, manifests, result, data)
                    break
            if hit:
                break
        if hit is None:
            print("no hit")
            return
        target, manifests, result, data = hit
        public_url = await client.upload(data, signer=kp)
        await client.submit_data(
            kp, target.id, data, public_url,
            manifests[result.winner].model_id,
            result.embedding, result.distance, result.loss_score
        )
        print("submitted", target.id)
        for _ in range(2):
            await client.advance_epoch()
        # The claim loop.
        targets = await client.get_targets(status="claimable")
        for target in targets:
            await client.claim_rewards(kp, target.id)
        print("claimed", len(targets))

    asyncio.run(test())
    '''.replace("YOUR_SECRET_KEY", key.to_secret_key())
    done = run_without_ray(code, env)
    assert done.returncode == 0, done.stderr
    assert "Connected! Balance: 50 SOMA" in done.stdout and "Open targets: " in done.stdout
    assert "Unclosed" not in done.stderr  # the guide never closes its client
    if "no hit" not in done.stdout:
        assert "submitted 0x" in done.stdout and re.search(r"claimed [1-9]", done.stdout), done.stdout


def test_the_model_training_workflow_as_written(home):
    """Steps 1 and 5-8 of the guide's Model Training Workflow (steps 2-4 train: here the weights
    are a network model's, downloaded as `soma model train --from` starts, and the embedding is
    the model's own; the upload is the network's blob store)."""
    _, env = home
    key = Keypair.generate()
    code = '''
    import asyncio
    import numpy as np
    from soma_sdk import SomaClient, Keypair
    from soma_ray.model.embedding import model_embedding
    from soma_ray.training.from_network import fetch_model_weights

    async def train_commit_reveal():
        client = await SomaClient(chain="testnet")
        kp = Keypair.from_secret_key("YOUR_SECRET_KEY")
        await client.request_faucet(kp.address(), 20)

        # Step 1: the landscape.
        models = await client.get_active_models()
        print("active models:", len(models))
        # Steps 2-4 stand in: the first network model's weights, and the model's own embedding.
        weights_bytes = await fetch_model_weights(client, models[0].model_id)
        embedding = np.frombuffer(model_embedding(weights_bytes, [b"def f(x):\\n    return x\\n" * 20]), "<f4")

        # Step 5: create the model, staking all available.
        model_id = await client.create_model(
            kp,
            commission_rate=1000,   # 10% commission
            stake_amount=None       # stake all available
        )
        # Step 6: commit weights.
        encrypted, key = SomaClient.encrypt_weights(weights_bytes)
        weights_url = await client.upload(encrypted, "weights", signer=kp)
        await client.commit_model(
            kp, model_id, weights_url, encrypted, key, embedding
        )
        commit_epoch = (await client.get_epoch()).epoch
        # Step 7: localnet: advance instantly.
        await client.advance_epoch()
        epoch_info = await client.get_epoch()
        assert epoch_info.epoch > commit_epoch
        # Step 8: reveal.
        await client.reveal_model(kp, model_id, key, embedding)
        active = {m.model_id: m for m in await client.get_active_models()}
        print("revealed", model_id, active[model_id].status, round(await client.get_balance(kp.address()), 3))

    asyncio.run(train_commit_reveal())
    '''.replace("YOUR_SECRET_KEY", key.to_secret_key())
    done = run_without_ray(code, env)
    assert done.returncode == 0, done.stderr
    revealed = re.search(r"revealed (0x[0-9a-f]{64}) (\w+) ([\d.]+)", done.stdout)
    assert revealed and revealed.group(2) == "Active", done.stdout
    assert float(revealed.group(3)) < 0.01  # "stake all available": only dust of the 20 SOMA is left
    assert "Unclosed" not in done.stderr


def test_the_guides_and_the_plans_cli_forms(home, weights_network):
    _, env = home

    def soma(*args, ok=True):
        done = subprocess.run([SOMA_COMMAND, *args], capture_output=True, text=True, env=env, timeout=300)
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    first = soma("wallet", "new")  # make run made a first key; the guide's makes a second one
    new = soma("wallet", "new")
    new_address = ID.search(new.stdout).group(0)
    assert new_address != ID.search(first.stdout).group(0)
    funded = soma("faucet", "--chain", "testnet")
    assert new_address in funded.stdout  # the new key, not the old one
    secret = soma("wallet", "export").stdout.strip()
    assert Keypair.from_secret_key(secret).address() == new_address
    listed = soma("target", "list", "--status", "claimable", "--chain", "testnet")
    assert "b'" not in listed.stdout
    claim = soma("target", "claim", "--target-id", "0x" + "11" * 32, "--chain", "testnet", ok=False)
    assert claim.returncode == 1 and "No such option" not in claim.stderr
    models = soma("model", "list", "--owner", "me", "--pending", "--chain", "testnet")
    assert "models" in models.stdout
    for args in (("submit", "list", "--mine"), ("submit", "list", "--target", "0x" + "11" * 32),
                 ("challenge", "list", "--challenger", new_address),
                 ("challenge", "list", "--submission", "0x" + "11" * 32)):
        assert "b'" not in soma(*args, "--chain", "testnet").stdout
    for args in (("submit", "info", "0x" + "22" * 32), ("submit", "claim-bond", "--submission", "0x" + "22" * 32),
                 ("challenge", "initiate", "--submission", "0x" + "22" * 32, "--type", "score-fraud"),
                 ("model", "download", "--model", "0x" + "22" * 32, "--output", str(Path(env["SOMA_HOME"]) / "m")),
                 ("model", "stake", "--model", "0x" + "22" * 32, "--amount", "1"),
                 ("model", "reveal", "--model", "0x" + "22" * 32),
                 ("model", "update-reveal", "--model", "0x" + "22" * 32),
                 ("verify", "--data", "/dev/null", "--target", "0x" + "22" * 32, "--model", "0x" + "22" * 32)):
        done = soma(*args, "--chain", "testnet", ok=False)
        assert done.returncode == 1 and done.stderr.startswith("error:"), (args, done.stderr)  # parsed, refused
