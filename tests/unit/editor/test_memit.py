"""MEMIT: its closed form is the solution of its least-squares objective (solved directly), the
per-fact rows are its one-fact case, and the batched algorithm's updates satisfy it layer by layer."""

import torch
from editor_facts import fact_batch
from instructedit.editor import methods
from instructedit.editor.key_stats import KeyStats
from instructedit.editor.memit import layer_stats, memit_fit, memit_solver


def _spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, 3 * d, generator=g, dtype=torch.float64)
    return a @ a.T / (3 * d)


def test_joint_update_is_the_least_squares_solution():
    d_in, d_out, n, lam = 12, 5, 4, 3.0
    g = torch.Generator().manual_seed(0)
    c = _spd(d_in, 1)
    keys = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    resid = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    rows = memit_solver({"w": KeyStats(c, 100, 10, None)}, lam, "cpu")("w", keys, True)
    dw = resid.T @ rows  # dW = sum_i r_i m_i^T
    # argmin ||dW K - R||^2 + lam tr(dW C dW^T), as one stacked least-squares problem:
    # rows K^T (targets R) and sqrt(lam) L^T with C = L L^T (targets 0)
    chol = torch.linalg.cholesky(c)
    a = torch.cat([keys, lam**0.5 * chol.T])
    b = torch.cat([resid, torch.zeros(d_in, d_out, dtype=torch.float64)])
    direct = torch.linalg.lstsq(a, b).solution.T
    torch.testing.assert_close(dw, direct, atol=1e-10, rtol=1e-8)
    # and the normal equations dW (lam C + K K^T) = R K^T
    torch.testing.assert_close(dw @ (lam * c + keys.T @ keys), resid.T @ keys, atol=1e-10, rtol=1e-8)


def test_per_fact_rows_are_the_one_fact_joint_solution():
    c = _spd(10, 2)
    keys = torch.randn(3, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    solve = memit_solver({"w": KeyStats(c, 100, 10, None)}, 2.0, "cpu")
    each = solve("w", keys, False)
    for i in range(3):
        torch.testing.assert_close(each[i], solve("w", keys[i : i + 1], True)[0], atol=1e-12, rtol=1e-10)


def _memit(llama, stats_text):
    m = methods.get("memit")
    hp = m.load_hparams("tiny-llama", {"stats": {"text_file": stats_text}})
    assert hp.mom2_weight == 128.0  # the YAML's tiny-llama section
    em, make = m.load(llama, hparams=hp)
    return em, make, hp


def test_batched_memit_satisfies_each_layers_objective(llama, stats_text, key_cache):
    em, _, hp = _memit(llama, stats_text)
    assert em.names == [f"model.layers.{i}.mlp.down_proj" for i in (1, 2)] and em.split.split_at == 1
    stats = layer_stats(em, hp.stats)
    solve = memit_solver(stats, hp.mom2_weight, "cpu")
    b = fact_batch(llama.tokenizer, 3)
    trace: list[dict] = []
    edits = memit_fit(em, b, em.lower(b), hp.target, solve, joint=True, trace=trace)
    assert [t["name"] for t in trace] == em.names
    for t in trace:
        e = edits[t["name"]]
        assert e.U.shape[:2] == (1, 3)  # one edit holding all three facts
        dw = e.dense().to(torch.float64)
        k, r = t["keys"], t["resid"]
        lam_c = hp.mom2_weight * stats[t["name"]].mom2
        torch.testing.assert_close(dw @ (lam_c + k.T @ k), r.T @ k, atol=1e-6, rtol=1e-4)
    # the residual left for the last layer is what the first layer did not deliver
    assert trace[1]["resid"].norm() < 2 * trace[0]["resid"].norm()


def test_one_fact_batched_equals_the_independent_edit(llama, stats_text, key_cache):
    em, make, hp = _memit(llama, stats_text)
    solve = memit_solver(layer_stats(em, hp.stats), hp.mom2_weight, "cpu")
    one = fact_batch(llama.tokenizer, 1)
    h = em.lower(one)
    joint = memit_fit(em, one, h, hp.target, solve, joint=True)
    alone = make(one, h)
    for n in em.names:
        torch.testing.assert_close(joint[n].dense(), alone[n].dense(), atol=1e-7, rtol=1e-4)
