"""The public surface as an attacker meets it, on one localnet with its services deployed with the
public network's limits (soma_ray/routes.py RATE_LIMITS): unsigned, forged, oversized and slow
uploads; SSRF through the scoring service's data_url; floods of long polls; faucet calls for many
addresses; hostile weights on chain; and public score requests flooding while an audit runs.

Every answer is a typed 4xx (429 with Retry-After for "later"), never a 5xx; a refusal changes no
state and reaches nothing inside. The module runs its own network (the limits are its point);
Serve's proxy sees every request from 127.0.0.1, declared a trusted proxy so that a test can
speak for many clients with X-Forwarded-For."""
import asyncio
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import aiohttp
import msgspec
import numpy as np
import pytest
import requests

from localnet_helpers import client_of, eventually, run, start_network, statuses, whole_http_answer
from serve.scoring import weights_file_bound
from soma_ray.fetch import FETCH_FAILED
from soma_ray import tickets, wire
from soma_ray.model import V1Config
from soma_ray.protocol.crypto import Keypair
from soma_ray.protocol.encoding import decode, encode
from soma_ray.protocol import errors
from soma_ray.protocol.genesis import preset_keypair
from soma_ray.protocol.state import TARGET
from soma_ray.protocol.targets import cosine_distance_fixed
from soma_ray.protocol.types import SystemState, Target
from soma_ray.routes import RATE_LIMITS
from soma_ray.wire import ScoreRequest, UploadTicket

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
SOMA = 10**9
RESOLVE_S = 240.0
answers_seen: list[int] = []  # every status an attacker's request got in this module


@pytest.fixture(scope="module")
def net(ray_session, serve_url, tmp_path_factory):
    network = start_network(tmp_path_factory, "redteam", validators=1, genesis_weights=True,
                            http_port=int(serve_url.rsplit(":", 1)[1]))
    try:
        network.start_services(scoring_device="cpu", limits=RATE_LIMITS, trusted_proxies=("127.0.0.1",))
    except BaseException:
        network.stop()
        raise
    yield network
    network.stop()


@pytest.fixture(scope="module")
def url(net):
    return net.config.public_url


@pytest.fixture(scope="module")
def rich(net):
    """A funded account (through the Ray path: the gateway's faucet limits are for the tests)."""
    async def fund():
        client = await client_of(net)
        try:
            key = preset_keypair("red-rich", 0)
            await client.request_faucet(key.address, 100 * SOMA)
            return key
        finally:
            await client.close()
    return run(fund())


def root(net) -> bytes:
    return statuses(net)[0].state_root


@pytest.fixture(scope="module")
def before(net, rich):
    """The state root before the refusals (checked unchanged after them)."""
    return root(net)


def typed(response, statuses=range(400, 500)) -> str:
    """The typed error code of a refusal, asserting its status (and Retry-After on a 429)."""
    status = getattr(response, "status_code", None) or getattr(response, "status")
    answers_seen.append(status)
    assert status in statuses, (status, getattr(response, "text", ""))
    if status == 429:
        assert int(response.headers["Retry-After"]) >= 1
    if response.headers.get("content-type", "").startswith(wire.MSGPACK):
        return decode(response.content, errors.ExecutionError).code
    return response.json()["error"]


def fields(response) -> dict:
    """The typed error's fields, from msgpack or JSON."""
    if response.headers.get("content-type", "").startswith(wire.MSGPACK):
        return dict(decode(response.content, errors.ExecutionError).fields)
    return response.json()["fields"]


def chain_id(url) -> bytes:
    return decode(requests.get(f"{url}/system", timeout=30).content, SystemState).chain_id


def ask_ticket(url, keypair, kind, size, chain=None):
    request = tickets.sign_request(keypair, kind, size, chain_id(url) if chain is None else chain)
    return requests.post(f"{url}/blobs/ticket", data=encode(request),
                         headers={"Content-Type": wire.MSGPACK, "Accept": wire.MSGPACK}, timeout=60)


def good_ticket(url, keypair, kind="data", size=100) -> UploadTicket:
    answer = ask_ticket(url, keypair, kind, size)
    assert answer.status_code == 200, answer.text
    return decode(answer.content, UploadTicket)


# ----------------------------------------------------------------------------- uploads


def test_unsigned_uploads_forged_tickets_and_unfunded_accounts_are_refused(net, url, rich, before):
    data = b"an attacker's bytes" * 10
    assert typed(requests.put(f"{url}/blobs/data", data=data, timeout=60)) == "UploadUnauthorized"
    ticket = good_ticket(url, rich, size=len(data))
    for forged in (msgspec.structs.replace(ticket, max_size=10**9),
                   msgspec.structs.replace(ticket, address=Keypair.generate().address),
                   msgspec.structs.replace(ticket, expires_ms=ticket.expires_ms + 10**9),
                   msgspec.structs.replace(ticket, mac=os.urandom(32))):
        reply = requests.put(f"{url}/blobs/data", data=data, timeout=60,
                             headers={tickets.TICKET_HEADER: tickets.show_ticket(forged)})
        assert typed(reply) == "UploadUnauthorized"
    # A request signed for another network, and an account that holds nothing.
    assert typed(ask_ticket(url, rich, "data", 10, chain=b"\x01" * 32)) == "UploadUnauthorized"
    assert typed(ask_ticket(url, Keypair.generate(), "weights", 10)) == "AccountUnderfunded"
    # The genuine ticket is still good (nothing above spent it), once.
    header = {tickets.TICKET_HEADER: tickets.show_ticket(ticket)}
    assert requests.put(f"{url}/blobs/data", data=data, headers=header, timeout=60).status_code == 200
    assert typed(requests.put(f"{url}/blobs/data", data=data, headers=header, timeout=60)) == "UploadUnauthorized"


def test_oversized_uploads_are_refused_at_the_ticket_and_at_the_body(net, url, rich):
    parameters = net.config.genesis_config().parameters
    big = ask_ticket(url, rich, "data", parameters.max_submission_bytes + 1)
    assert typed(big) == "BlobTooLarge"
    # Weights: what the scoring service will load, not the chain's 8 GiB.
    cap = weights_file_bound(V1Config.small())
    heavy = ask_ticket(url, rich, "weights", cap + 1)
    assert typed(heavy) == "BlobTooLarge" and fields(heavy)["max"] == cap < parameters.model_max_weight_size
    ticket = good_ticket(url, rich, size=100)
    header = {tickets.TICKET_HEADER: tickets.show_ticket(ticket)}
    over = requests.put(f"{url}/blobs/data", data=iter([b"x" * 64, b"x" * 64]), headers=header, timeout=60)
    assert typed(over) == "BlobTooLarge"


def test_a_slow_upload_is_cut_and_frees_its_slot(net, url, rich):
    ticket = good_ticket(url, rich, size=1000)
    host, port = urlsplit(url).hostname, urlsplit(url).port
    path = urlsplit(url).path + "/blobs/data"
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=60) as conn:
        conn.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     f"{tickets.TICKET_HEADER}: {tickets.show_ticket(ticket)}\r\n\r\n".encode())
        conn.sendall(b"1\r\nx\r\n")  # one byte, then nothing: the idle bound (10 s) cuts it
        conn.settimeout(60)
        answer = whole_http_answer(conn, conn.recv(4096))
    answers_seen.append(int(answer.split()[1]))
    assert answer.startswith(b"HTTP/1.1 408") and b"UploadTooSlow" in answer
    assert time.monotonic() - started < 40


# ----------------------------------------------------------------------------- SSRF


def test_a_data_url_inward_reaches_nothing(net, url):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    connections = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, peer = listener.accept()
                connections.append(peer)
                conn.close()
            except socket.timeout:
                continue

    watcher = threading.Thread(target=accept)
    watcher.start()
    target = next(t for t in (decode(requests.get(f"{url}/objects/0x{(TARGET + i).hex()}", timeout=30).content, Target)
                              for i in decode(requests.get(f"{url}/ids/0x{TARGET.hex()}", timeout=30).content, list[bytes]))
                  if t.status == "Open")
    try:
        for host in ("127.0.0.1", "2130706433", "0x7f000001", "127.1", "[::ffff:127.0.0.1]", "localhost",
                     "169.254.169.254", "10.0.0.1", "[::1]"):
            request = ScoreRequest(model_ids=list(target.model_ids), target_embedding=target.embedding,
                                   data_url=f"http://{host}:{port}/secret")
            reply = requests.post(f"{url}/scoring/score", data=msgspec.msgpack.encode(request),
                                  headers={"Content-Type": wire.MSGPACK}, timeout=120)
            assert typed(reply) == "DataUnavailable", host
            assert reply.json()["fields"]["reason"] == FETCH_FAILED, host  # nothing said of the place
        time.sleep(0.5)
    finally:
        stop.set()
        watcher.join()
        listener.close()
    assert connections == []


# ----------------------------------------------------------------------------- floods


async def _many(requests_: list[tuple[str, str, dict]], timeout_s: float = 120) -> list[tuple[int, dict, dict]]:
    """All at once: (status, headers, JSON body) of each (method, url, headers)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async def one(method, target, headers):
            async with session.request(method, target, headers={"Accept": wire.JSON, **headers}) as reply:
                return reply.status, dict(reply.headers), await reply.json(content_type=None)
        return await asyncio.gather(*(one(*r) for r in requests_))


def _check(answers, statuses=(408, 429)):
    for status, headers, body in answers:
        answers_seen.append(status)
        assert status in statuses, (status, body)
        assert body["error"]
        if status == 429:
            assert int(headers["Retry-After"]) >= 1 and body["error"] == "RateLimited"


def test_long_poll_floods_hold_a_bounded_share_of_the_gateway(net, url):
    wait = f"{url}/epoch/wait?epoch=999999&timeout_s=15"
    limit = RATE_LIMITS["long_poll"]

    async def flood():
        one_client = asyncio.ensure_future(_many([("GET", wait, {})] * 40))
        many = asyncio.ensure_future(_many([("GET", wait, {"X-Forwarded-For": f"10.1.{i // 250}.{i % 250}"})
                                            for i in range(limit.concurrent + 30)]))
        await asyncio.sleep(3)
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:  # the gateway still answers the rest
            async with session.get(f"{url}/health", headers={"Accept": wire.JSON,
                                                             "X-Forwarded-For": "192.0.2.200"}) as health:
                healthy = health.status, time.monotonic() - started
        return await one_client, await many, healthy

    one_client, many, (health_status, health_s) = run(flood())
    _check(one_client + many)
    held_one = [a for a in one_client if a[0] == 408]  # EpochNotReached after 15 s: it held a slot
    assert 1 <= len(held_one) <= limit.client_concurrent
    assert any(a[2]["fields"]["scope"] == "client" for a in one_client if a[0] == 429)
    held_many = [a for a in many if a[0] == 408]
    assert len(held_one) + len(held_many) <= limit.concurrent
    assert any(a[0] == 429 and a[2]["fields"]["scope"] == "all" for a in many)
    assert health_status == 200 and health_s < 5.0


def test_the_refusals_changed_nothing(net, before):
    assert root(net) == before


def test_faucet_calls_for_many_addresses_from_one_client_stop_at_its_limit(net, url):
    recipients = [Keypair.generate().address for _ in range(RATE_LIMITS["faucet"].per_client + 8)]
    codes = []
    for recipient in recipients:
        reply = requests.post(f"{url}/faucet", data=encode(wire.FaucetRequest(recipient, SOMA)),
                              headers={"Content-Type": wire.MSGPACK, "Accept": wire.JSON}, timeout=120)
        codes.append(reply.status_code)
        if reply.status_code != 200:
            assert typed(reply) == "RateLimited" and reply.json()["fields"]["scope"] == "client"
    paid = RATE_LIMITS["faucet"].per_client
    assert codes[:paid] == [200] * paid and set(codes[paid:]) == {429}

    async def balances():
        client = await client_of(net)
        try:
            return [await client.get_balance(r) for r in recipients]
        finally:
            await client.close()

    assert run(balances()) == [SOMA] * paid + [0] * (len(recipients) - paid)  # the refused paid nothing


# ----------------------------------------------------------------------------- hostile weights


def hostile_weights() -> bytes:
    """A safetensors file whose JSON header nests 5,000 deep."""
    header = b"[" * 5_000 + b"]" * 5_000
    return len(header).to_bytes(8, "little") + header


def test_hostile_weights_on_chain_are_a_422_naming_the_model(net, url):
    async def publish():
        client = await client_of(net)
        try:
            owner = preset_keypair("red-owner", 0)
            await client.request_faucet(owner.address, 100 * SOMA)
            model_id = await client.create_model(owner, commission_rate=100)
            encrypted, key = client.encrypt_weights(hostile_weights())
            weights_url = await client.upload(encrypted, kind="weights", signer=owner)
            embedding = np.ones(await client.get_embedding_dim(), np.float32)
            await client.commit_model(owner, model_id, weights_url, encrypted, key, embedding)
            await client.advance_epoch()
            await client.reveal_model(owner, model_id, key, embedding)
            assert (await client.get_model_manifests([model_id]))[0].model_id == model_id  # on chain
            return model_id, (await client.get_system_state()).parameters.embedding_dim
        finally:
            await client.close()

    model_id, dim = run(publish())
    request = ScoreRequest(model_ids=[model_id], target_embedding=np.ones(dim, "<f4").tobytes(), data=b"hello")
    reply = requests.post(f"{url}/scoring/score", data=msgspec.msgpack.encode(request),
                          headers={"Content-Type": wire.MSGPACK}, timeout=120)
    assert typed(reply, [422]) == "ModelUnavailable"
    assert reply.json()["fields"]["model_id"] == "0x" + model_id.hex() and reply.json()["fields"]["stage"] == "load"


# ----------------------------------------------------------------------------- audits under a flood


async def _honest_hit(client):
    epoch = (await client.get_epoch()).epoch
    for target_id in await client.get_object_ids(TARGET):
        target = await client.get_object(TARGET, target_id, Target)
        if target.status != "Open" or target.generation_epoch != epoch:
            continue
        manifests = await client.get_model_manifests(target.model_ids)
        for n in range(3):
            data = f"red team {n}: def audit(submission): return rescore(submission)\n".encode() * 4
            try:
                scored = await client.score(None, manifests, target.embedding, data=data)
            except errors.ModelUnavailable:  # the hostile model: not this target
                break
            if cosine_distance_fixed(scored.embedding, target.embedding) <= target.distance_threshold:
                return target, data, manifests[scored.winner].model_id, scored
    raise AssertionError("no data lands within a target's threshold")


def test_an_audit_decides_in_time_under_a_flood_of_public_score_requests(net, url):
    stop = threading.Event()
    flood_answers: list[int] = []

    async def flood(model_ids: list[bytes], embedding: bytes):
        body = msgspec.msgpack.encode(ScoreRequest(model_ids=model_ids, target_embedding=embedding,
                                                   data=os.urandom(32 * 1024)))
        async with aiohttp.ClientSession() as session:
            async def one_client(i):
                while not stop.is_set():
                    async with session.post(f"{url}/scoring/score", data=body, headers={
                            "Content-Type": wire.MSGPACK, "X-Forwarded-For": f"10.9.0.{i}"}) as reply:
                        flood_answers.append(reply.status)
                        if reply.status == 429:
                            await asyncio.sleep(0.2)
            await asyncio.gather(*(one_client(i) for i in range(24)))

    async def scenario():
        client = await client_of(net)
        try:
            miner, challenger = preset_keypair("red-miner", 0), preset_keypair("red-challenger", 0)
            for key in (miner, challenger):
                await client.request_faucet(key.address, 100 * SOMA)
            target, data, model_id, scored = await _honest_hit(client)
            url_ = await client.upload(data, signer=miner)
            flooding = asyncio.get_running_loop().run_in_executor(
                None, lambda: asyncio.run(flood(list(target.model_ids), target.embedding)))
            await asyncio.sleep(5)  # the flood is in full swing
            # A fake score: the audit must catch it (ChallengerWins) while the public floods —
            # the validators' own sampling audit of the fill, or the challenger's, whichever
            # comes first (both are the same audit).
            opened = time.monotonic()
            await client.submit_data(miner, target.id, data, url_, model_id,
                                     np.frombuffer(target.embedding, "<f4"), 0.0, scored.loss_score / 2)
            try:
                await client.initiate_challenge(challenger, target.id, "score-fraud")
            except (errors.ChallengeAlreadyOpen, errors.TargetNotFilled):  # the sampling audit was first
                pass

            async def settled():
                now = await client.get_object(TARGET, target.id, Target)
                return now if now.status not in ("Filled", "Challenged") else None

            after = await eventually(settled, timeout_s=RESOLVE_S, interval_s=0.5)
            took = time.monotonic() - opened
            stop.set()
            await flooding
            return after, took
        finally:
            stop.set()
            await client.close()

    after, took = run(scenario())
    print(f"audit decided {took:.1f} s after the fill, under {len(flood_answers)} public score answers "
          f"({flood_answers.count(200)} scored, {flood_answers.count(429)} refused 429)")
    assert after.status == "Open" and after.submission_id is None  # ChallengerWins: the fake was caught
    parameters = net.config.genesis_config().parameters
    assert took < parameters.audit_timeout_ms / 1000  # in time: within the audit timeout itself
    assert set(flood_answers) <= {200, 429} and flood_answers.count(429) > 0 and flood_answers.count(200) > 0
    answers_seen.extend(s for s in flood_answers if s != 200)


def test_no_attack_got_a_5xx():
    assert answers_seen and all(400 <= s < 500 for s in answers_seen), sorted(set(answers_seen))
    print(f"red-team refusals checked: {len(answers_seen)}")
