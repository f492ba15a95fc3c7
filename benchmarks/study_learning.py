"""The study of docs/game.md ("Does the network learn?"): the network's held-out loss over the
epochs of `soma simulate` (small V1, in process, this machine) for five cases —

    a  no trainers (8 miners)                      the control: nothing trains
    b  3 trainers fed by 8 miners (the default mix: honest, a fifth lazy, a tenth fraudulent)
    c  3 trainers fed by 8 lazy miners only (random bytes)
    d  3 trainers on their own corpus, no miners
    e  one model of the same size trained centrally on everything the trainers of the case
       played just before it in --cases saw (their documents, in one run of their total steps,
       from the genesis model most of them started from): `--cases abe` for b's

— and, from b's and c's revealed hits, the share of rewarded hits that were noise and what a
loss bound on hits or a loss-weighted reward would have paid for noise (a proposal, measured on
the claimed losses; the protocol is unchanged).

    .venv/bin/python benchmarks/study_learning.py [--epochs 6] [--cases abcde] [--out study.json] [--plot docs/learning_curve.png]
    .venv/bin/python benchmarks/study_learning.py --cases '' --load cde.json --report a=r0.json b=r3.json --plot docs/learning_curve.png

Each case is a fresh game from the same seed (the same genesis models and held-out items);
run it under the heavy lock (minutes on 2 shared cores). The figures are written as JSON
(one report per case, as `soma simulate --report` writes them) and printed as a table.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soma_ray.cli.simulate import Tally, report_entry  # noqa: E402
from soma_ray.strategies import corpus_files, crowd_mix, roster  # noqa: E402
from soma_ray.strategies.decide import LAZY_RATE  # noqa: E402

MINERS, TRAINERS = 8, 3
CASES = {  # case: (miners' mix, trainers)
    "a": (crowd_mix(MINERS, 0.1, LAZY_RATE), 0),
    "b": (crowd_mix(MINERS, 0.1, LAZY_RATE), TRAINERS),
    "c": (crowd_mix(MINERS, 0.0, 1.0), TRAINERS),
    "d": (crowd_mix(0, 0.0, LAZY_RATE), TRAINERS),
}
LABELS = {"a": "no trainers", "b": "trainers + 8 miners", "c": "trainers + 8 lazy miners",
          "d": "trainers, own corpus only", "e": "central model"}
LOSS_BOUNDS = (4.0, 4.5, 5.0)  # nats: a hit's claimed loss must be below this (the proposal)


async def play(case: str, epochs: int, seed: int):
    """One game of `epochs` epochs; (entries as `soma simulate --report` writes them, the game)."""
    from soma_ray.heldout import HeldOut
    from soma_ray.strategies.simulated import SimulatedGame

    mix, trainers = CASES[case]
    game = SimulatedGame(roster(mix, 0, trainers), seed, corpus_files(None))
    held_out, entries = HeldOut(), []
    await game.setup()
    tally, sealed = Tally.of(game), len(game.client.feed)
    for epoch in range(epochs + 1):
        if epoch:
            await game.play_epoch()
        loss = await held_out.measure(game.client)
        entries.append(report_entry(game, epoch and game.client.sim.state.system().epoch, tally, Tally.of(game),
                                    loss, game.client.feed[sealed:]))
        tally, sealed = Tally.of(game), len(game.client.feed)
        e = entries[-1]
        print(f"  {case} epoch {e['epoch']}: best {e['network_loss_bpb']:.3f} routed {e['network_routed_bpb']:.3f} "
              f"bpb | hits {e['hits']} (lazy {e['lazy_hits']}) claims {e['claims']} | fine-tunes {e['trainings']} "
              f"hit items {e['hit_items']}", flush=True)
    return entries, game


def central(game, entries) -> dict:
    """Case e: one model trained on the union of the trainers' documents for their total steps."""
    from soma_ray.heldout import held_out_items, item_losses
    from soma_ray.model import load_weights
    from soma_ray.training.fine_tune import fine_tune_in_process

    trainers = [p for p in game.participants if p.role == "trainer"]
    documents = [d for t in trainers for d in t.trained_on]
    steps = sum(t.stats.train_steps for t in trainers)
    base = Counter(t.base_model for t in trainers).most_common(1)[0][0]
    weights = asyncio.run(_fetch(game, base))
    started = time.perf_counter()
    trained = fine_tune_in_process(weights, documents, steps, seed=0)
    seconds = time.perf_counter() - started
    items = held_out_items()
    bpb = float(item_losses(load_weights(trained), [i.data for i in items]).bpb.mean())
    genesis = float(item_losses(load_weights(weights), [i.data for i in items]).bpb.mean())
    return {"steps": steps, "documents": len(documents), "bytes": sum(map(len, documents)), "base": "0x" + base.hex(),
            "base_bpb": genesis, "bpb": bpb, "train_s": seconds}


async def _fetch(game, model_id: bytes) -> bytes:
    from soma_ray.training.from_network import fetch_model_weights

    return await fetch_model_weights(game.client, model_id)


def noise(entries) -> dict:
    """Rewarded hits (claims) and revealed hits by who mined them; the proposal's measures on the
    revealed hits' claimed losses (nats): the share of noise kept under each loss bound, and the
    noise share of a loss-weighted reward (each hit paid max(0, B - loss), B = ln 256)."""
    claims = sum(e["claims"] for e in entries)
    lazy_claims = sum(e["lazy_claims"] for e in entries)
    hits = [h for e in entries for h in e["revealed"] if h["miner"] in ("honest", "lazy")]
    lazy = [h["loss"] for h in hits if h["miner"] == "lazy"]
    honest = [h["loss"] for h in hits if h["miner"] == "honest"]
    out = {"claims": claims, "lazy_claims": lazy_claims, "noise_share_of_claims": lazy_claims / claims if claims else None,
           "hits": len(hits), "lazy_hits": len(lazy),
           "loss_nats": {"honest": _spread(honest), "lazy": _spread(lazy)}, "bounds": {}}
    for bound in LOSS_BOUNDS:
        kept_lazy, kept_honest = sum(x < bound for x in lazy), sum(x < bound for x in honest)
        out["bounds"][str(bound)] = {"honest_kept": kept_honest, "lazy_kept": kept_lazy,
                                     "noise_share": kept_lazy / (kept_lazy + kept_honest) if kept_lazy + kept_honest else None}
    cap = math.log(256)
    paid_lazy, paid_honest = sum(max(0.0, cap - x) for x in lazy), sum(max(0.0, cap - x) for x in honest)
    out["loss_weighted_noise_share"] = paid_lazy / (paid_lazy + paid_honest) if paid_lazy + paid_honest else None
    out["flat_noise_share"] = len(lazy) / len(hits) if hits else None
    return out


def _spread(values):
    if not values:
        return None
    values = sorted(values)
    return {"n": len(values), "min": values[0], "median": values[len(values) // 2], "max": values[-1]}


def plot(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 5.0), dpi=100)
    axes = figure.add_subplot()
    for case, data in sorted(results.items()):
        if case == "e":
            axes.axhline(data["bpb"], color="black", linestyle="--", label=f"e: {LABELS['e']} (of {data['trainers_of']}'s data and steps)")
            continue
        epochs = [e["epoch"] for e in data["entries"]]
        axes.plot(epochs, [e["network_loss_bpb"] for e in data["entries"]], marker="o", label=f"{case}: {LABELS[case]}")
        axes.plot(epochs, [e["network_routed_bpb"] for e in data["entries"]], linestyle=":", color=axes.lines[-1].get_color())
    axes.set_title("The network's held-out loss (solid: best model per item; dotted: routed by embedding)", fontsize=9)
    axes.set_xlabel("epoch")
    axes.set_ylabel("bits per byte")
    axes.legend(fontsize=8)
    figure.savefig(path, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--cases", default="abcde")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("study_learning.json"))
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--load", type=Path, nargs="*", default=[],
                        help="Earlier outputs whose cases join the table and plot (the cases run now win).")
    parser.add_argument("--report", nargs="*", default=[], metavar="CASE=FILE",
                        help="A case's `soma simulate --report` file (a: --trainers 0, b: --trainers 3, both "
                             "--epochs 6 --miners 8), read instead of playing it.")
    args = parser.parse_args()
    results: dict = {}
    for path in args.load:
        results.update(json.loads(path.read_text()))
    for given in args.report:
        case, _, path = given.partition("=")
        entries = json.loads(Path(path).read_text())
        results[case] = {"entries": entries, "wall_s": None, "noise": noise(entries), "from": "soma simulate --report"}
    for case in args.cases:
        if case == "e":
            continue
        started = time.perf_counter()
        entries, game = asyncio.run(play(case, args.epochs, args.seed))
        results[case] = {"entries": entries, "wall_s": time.perf_counter() - started, "noise": noise(entries),
                         "trainers": [{"index": p.index, "niche": p.niche, "trainings": p.stats.trainings,
                                       "reveals": p.stats.reveals, "errors": p.stats.errors}
                                      for p in game.participants if p.role == "trainer"]}
        print(f"{case}: {time.perf_counter() - started:.0f} s", flush=True)
        following = args.cases[args.cases.index(case) + 1:args.cases.index(case) + 2]
        if following == "e" and CASES[case][1]:
            started = time.perf_counter()
            results["e"] = central(game, entries)
            results["e"].update(wall_s=time.perf_counter() - started, trainers_of=case)
            print(f"e: {results['e']}", flush=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n{'case':<40} {'genesis':>8} {'last':>8} {'change':>8} {'routed':>8} {'r.change':>8} {'wall s':>7}")
    for case, data in sorted(results.items()):
        if case == "e":
            print(f"{'e: ' + LABELS['e'] + ' (of ' + data['trainers_of'] + ')':<40} {data['base_bpb']:8.3f} {data['bpb']:8.3f} "
                  f"{(data['bpb'] - data['base_bpb']) / data['base_bpb']:+8.1%} {'':>8} {'':>8} {data['wall_s']:7.0f}")
            continue
        first, last = data["entries"][0], data["entries"][-1]
        print(f"{case + ': ' + LABELS[case]:<40} {first['network_loss_bpb']:8.3f} {last['network_loss_bpb']:8.3f} "
              f"{(last['network_loss_bpb'] - first['network_loss_bpb']) / first['network_loss_bpb']:+8.1%} "
              f"{last['network_routed_bpb']:8.3f} "
              f"{(last['network_routed_bpb'] - first['network_routed_bpb']) / first['network_routed_bpb']:+8.1%} "
              f"{data['wall_s'] or float('nan'):7.0f}")
    for case in ("b", "c"):
        if case in results:
            print(f"noise ({case}): {json.dumps(results[case]['noise'])}")
    if args.plot is not None:
        plot(results, args.plot)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
