"""A crowd trainer's fine-tune as a localnet runs it (docs/game.md, "Trainers on a localnet"): a
Ray Train job started from a thread of an async actor that reserves no CPU, its one worker
reserving a hundredth of a CPU, while the rest of the cluster's CPUs are held by others."""
import pytest
import ray

from soma_ray.model import genesis_model_weights, load_weights, score_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]
DOCUMENTS = [f"def f{i}(x):\n    return x * {i}\n".encode() * 20 for i in range(6)]


@ray.remote(num_cpus=0)
class Crowd:
    """What a crowd actor does for its trainers: `RayTrainTraining.fine_tune` on its event loop."""

    async def fine_tune(self, weights: bytes, documents: list[bytes], steps: int) -> bytes:
        from soma_ray.training.fine_tune import RayTrainTraining

        return await RayTrainTraining("test-trainer").fine_tune(weights, documents, steps, seed=1)

    async def alive(self) -> bool:
        return True


@ray.remote(num_cpus=1)
class Holder:
    """Holds a whole CPU, as a localnet's scoring replica does."""

    def ready(self) -> bool:
        return True


def test_a_trainers_fine_tune_runs_as_a_ray_train_job_from_an_async_actor_on_a_busy_cluster(ray_session):
    holder = Holder.remote()
    crowd = Crowd.remote()
    try:
        ray.get(holder.ready.remote(), timeout=60)
        before = genesis_model_weights(0)
        job = crowd.fine_tune.remote(before, DOCUMENTS, 3)
        assert ray.get(crowd.alive.remote(), timeout=60)  # its event loop goes on meanwhile
        after = ray.get(job, timeout=180)
        loss = [score_model(load_weights(w), DOCUMENTS[0]).loss for w in (before, after)]
        assert loss[1] < loss[0] - 0.5, loss
    finally:
        ray.kill(crowd)
        ray.kill(holder)
