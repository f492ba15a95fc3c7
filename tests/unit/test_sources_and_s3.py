"""Corpus sources (soma_ray/sources.py: a directory, JSONL, Parquet, a dataset saved to disk) and
uploads to the user's own S3-compatible bucket (soma_ray/s3.py) against moto's server started
here on a free loopback port."""
import asyncio
import json
import socket
import subprocess
import sys
import time

import pytest

from soma_ray import s3, sources
from soma_ray.client import SomaClient
from soma_ray.fetch import fetch_bytes
from soma_ray.protocol.encoding import blake2b256
from soma_ray.training.corpus import read_corpus

ITEMS = ["def f():\n    return 1\n", "", "x" * 50, "print('hi')\n"]


def test_a_directory_jsonl_parquet_and_saved_dataset_give_the_same_items(tmp_path):
    expected = [i.encode() for i in ITEMS if i and len(i) <= 40]
    folder = tmp_path / "dir"
    folder.mkdir()
    for n, item in enumerate(ITEMS):
        (folder / f"{n}.py").write_text(item)
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text("\n".join(json.dumps({"content": i, "lang": "py"}) for i in ITEMS) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": ITEMS, "n": list(range(len(ITEMS)))}), tmp_path / "items.parquet")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"code": ITEMS}).save_to_disk(str(tmp_path / "saved"))
    for source, kind in ((folder, "directory"), (jsonl, "jsonl"), (tmp_path / "items.parquet", "parquet"),
                         (tmp_path / "saved", "saved")):
        assert sources.kind_of(source) == kind
        assert list(sources.iter_items(source, max_bytes=40)) == expected, kind
    assert [d.data for d in read_corpus(jsonl)] == [i.encode() for i in ITEMS if i]  # training reads them too
    with pytest.raises(sources.SourceError):
        list(sources.iter_items(tmp_path / "missing.jsonl"))
    assert sources.kind_of("hf:bigcode/the-stack-v2-dedup") == "hf"  # streamed; the tests reach no hub


def test_partial_s3_settings_are_an_error_and_none_means_the_blob_store():
    assert s3.from_environment({}) is None
    with pytest.raises(s3.S3ConfigError, match="S3_PUBLIC_URL"):
        s3.from_environment({name: "x" for name in s3.VARIABLES[:-1]})
    with pytest.raises(s3.S3ConfigError, match="prefix"):
        s3.from_environment({**{name: "x" for name in s3.VARIABLES}, "S3_ENDPOINT_URL": "r2.example"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_server():
    port = free_port()  # moto is a test dependency (pyproject's test extra): no skip when it is missing
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield url
    server.terminate()
    server.wait(timeout=30)


def test_upload_puts_into_the_users_bucket_and_returns_its_public_url(moto_server, monkeypatch):
    import boto3

    boto3.client("s3", endpoint_url=moto_server, aws_access_key_id="k", aws_secret_access_key="s",
                 region_name="us-east-1").create_bucket(Bucket="soma-data")
    env = {"S3_BUCKET": "soma-data", "S3_ACCESS_KEY_ID": "k", "S3_SECRET_ACCESS_KEY": "s",
           "S3_ENDPOINT_URL": moto_server, "S3_PUBLIC_URL": f"{moto_server}/soma-data", "S3_REGION": "us-east-1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    data = b"def hit():\n    return 42\n"

    async def main():
        async with SomaClient("http://127.0.0.1:9") as client:  # no gateway is needed for it
            url = await client.upload(data)
            # The network's fetcher refuses loopback addresses: a real bucket's public URL is
            # public; this local one is reached only as an origin the fetcher is told to allow.
            with pytest.raises(Exception):
                await fetch_bytes(url, len(data), 10.0)
            return url, await fetch_bytes(url, len(data), 10.0, allowed_origins=(moto_server,))

    url, fetched = asyncio.run(main())
    assert url == f"{moto_server}/soma-data/{blake2b256(data).hex()}"
    assert fetched == data
