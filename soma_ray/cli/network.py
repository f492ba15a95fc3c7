"""`soma stop` and `soma status`: the operator's view of a running network, over its Ray cluster."""
from __future__ import annotations

from typing import Annotated

import ray
import typer

from actors import network as net
from actors.crowd import stop_crowd
from soma_ray import cluster
from soma_ray.cli.common import fail
from soma_ray.cli.ops import AddressOption, NamespaceOption, quiet_serve, run_client
from soma_ray.client import SomaClient

app = typer.Typer()


def _other_networks(namespace: str) -> list[str]:
    """Namespaces in which another network (an epoch clock) still runs on this cluster."""
    found = ray.util.list_named_actors(all_namespaces=True)
    return sorted({entry["namespace"] for entry in found
                   if entry["name"].endswith("epoch-clock")
                   and not (entry["namespace"] == namespace and entry["name"] == "epoch-clock")})


@app.command("stop")
def stop(
    address: AddressOption = None, namespace: NamespaceOption = net.DEFAULT_NAMESPACE,
    keep_ray: Annotated[bool, typer.Option(
        "--keep-ray", help="Leave the Ray cluster `soma start` started running.")] = False,
) -> None:
    """Stop a running network (its data dir stays, so `soma start` resumes it), then end the
    Ray cluster `soma start` started for it (by its record, never `ray stop`)."""
    quiet_serve()
    try:
        given = cluster.explicit_address(address)
    except cluster.ClusterError as error:
        raise fail(str(error)) from None
    with cluster.locked():
        record = cluster.read_record()
        if given is not None and (record is None or record.address != given):
            record = None  # a cluster given by address is not ours to end
        if record is not None and not record.running():
            cluster.stop_cluster(record)
            typer.echo(f"the Ray cluster recorded in {record.path} ({record.address}) was not "
                       "running; removed its record")
            return
        unreachable = None
        try:
            cluster.connect(given or (record.address if record else None), namespace=namespace)
        except cluster.ClusterUnreachable as error:
            if record is None:
                raise fail(str(error)) from None
            unreachable = error  # a wedged recorded cluster: ending it ends the network too
        except ConnectionError as error:  # cluster.ClusterError, or ray.init's own
            raise fail(str(error)) from None
        stopped, others = "", []
        if unreachable is None:
            try:
                crowd = stop_crowd(namespace)
                net.connect(namespace).stop()
                stopped = f"stopped the network in namespace {namespace!r}" + (
                    f" and its crowd of {crowd} actor(s)" if crowd else "")
            except net.NetworkNotRunning as error:
                if record is None:
                    raise fail(str(error)) from None
                stopped = f"no network runs in namespace {namespace!r}"
            if record is not None:
                others = _other_networks(namespace)
        if record is None:
            typer.echo(f"{stopped} (the Ray cluster stays up)")
            return
        if keep_ray or others:
            why = (f"it still runs the network in namespace(s) {', '.join(map(repr, others))}"
                   if others and not keep_ray else "--keep-ray")
            typer.echo(f"{stopped}; the Ray cluster {record.address} stays up ({why}; recorded in "
                       f"{record.path}, `soma stop` ends it)")
            return
        ray.shutdown()
        left = cluster.stop_cluster(record)
        if left:
            raise fail(f"{stopped}, but processes {sorted(left)} of the Ray cluster "
                       f"{record.address} did not exit")
        if unreachable is None:
            typer.echo(f"{stopped}; ended the Ray cluster {record.address} (record removed)")
        else:
            typer.echo(f"the Ray cluster {record.address} did not answer ({unreachable.reason}); "
                       "ended it by its record (record removed)")



@app.command("status")
def status(address: AddressOption = None, namespace: NamespaceOption = net.DEFAULT_NAMESPACE) -> None:
    """Each validator's epoch, checkpoint height, state root, mempool size and the
    equivocation evidence it holds."""
    async def action(client: SomaClient):
        for index, found in enumerate(await client.status()):
            if found is None:
                typer.echo(f"validator-{index}: down")
            else:
                typer.echo(f"validator-{index}: epoch {found.epoch} checkpoint {found.sequence} "
                           f"root {found.state_root[:16]}… mempool {found.mempool} "
                           f"evidence {found.evidence}")

    run_client(address, namespace, action)
