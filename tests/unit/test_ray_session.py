"""init_ray's settings for a local Ray, without starting one (ray.init is replaced)."""

import os

import pytest


@pytest.fixture
def fake_init(monkeypatch):
    import ray
    from instructedit import ray_session

    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(ray_session.WORKER_NICENESS_ENV, raising=False)
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # init_ray sets it; restored after
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(
        {**kw, "niceness": os.environ.get(ray_session.WORKER_NICENESS_ENV)}))
    return ray_session, calls


def test_local_ray_workers_are_not_niced(fake_init, monkeypatch):
    # Ray nices its workers to 15 by default: on a small machine the training worker then loses the
    # cores to Ray's own nice-0 processes at every wake-up (docs/performance.md, the training step).
    ray_session, calls = fake_init
    assert ray_session.init_ray(verbose=True)
    assert calls[-1]["address"] == "local" and calls[-1]["niceness"] == "0"
    monkeypatch.setenv(ray_session.WORKER_NICENESS_ENV, "15")  # a value the user set wins
    ray_session.init_ray(verbose=True)
    assert calls[-1]["niceness"] == "15"


def test_joined_cluster_keeps_its_niceness(fake_init):
    ray_session, calls = fake_init
    ray_session.init_ray("ray://head:10001", verbose=True)
    assert calls[-1]["address"] == "ray://head:10001" and calls[-1]["niceness"] is None
