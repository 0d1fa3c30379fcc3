"""Generic Adam's own results (README "Generic Adam"): the (r, s) grid on the counterexamples
and steps to target against the mini-batch size B and the number N of DDP processes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lit_amsgrad.models.synthetic import loss_coefficients, mean_coefficient
from lit_amsgrad.reproduce import main as reproduce_main
from lit_amsgrad.reproduce_generic_adam import generic_adam, in_region, plot_generic_adam
from lit_amsgrad.reproduce_scaling import (
    LINEAR_EFFICIENCY,
    add_efficiency,
    plot_scaling,
    scaling,
    steps_to_target,
)

POINT_KEYS = {"r", "s", "in_region", "final_x", "avg_regret", "problem"}


@pytest.fixture
def no_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------------ fast pieces
@pytest.mark.parametrize(
    ("r", "s", "inside"),
    [(1.0, 0.5, True), (0.5, 0.25, True), (0.5, 0.2, False), (1.0, 1.0, False),
     (1.5, 0.9, True), (1.5, 0.7, False)],
)  # fmt: skip
def test_region_is_zero_below_r_at_most_two_s_below_two(r, s, inside):
    assert in_region(r, s) is inside


def test_a_mini_batch_averages_b_draws_so_its_variance_falls_as_one_over_b():
    rounds = torch.arange(1, 20_001)
    mu = mean_coefficient("stochastic", big=1010.0, small=-10.0, period=101, spike_prob=0.01)
    variance_one = 0.01 * 0.99 * 1020.0**2
    for batch in (1, 16, 256):
        c = loss_coefficients("stochastic", rounds, 4, batch_size=batch)
        assert abs(float(c.mean()) - mu) < 4 * math.sqrt(variance_one / batch / c.numel())
        assert float(c.var()) == pytest.approx(variance_one / batch, rel=0.1)


def test_each_process_draws_its_own_samples():
    rounds = torch.arange(1, 101)
    zero, one = (loss_coefficients("stochastic", rounds, 8, batch_size=64, rank=k) for k in (0, 1))
    assert not torch.equal(zero, one)
    assert torch.equal(zero, loss_coefficients("stochastic", rounds, 8, batch_size=64))


def test_steps_to_target_is_the_first_step_at_or_below_it():
    assert steps_to_target([(30, 0.1), (10, 0.5), (20, 0.2)], 0.2) == 20
    assert steps_to_target([(10, 0.5)], 0.2) is None


def test_efficiency_against_linear_and_where_it_stops_holding():
    points = [{"batch_size": b, "steps_to_target": s, "reached": True}
              for b, s in ((1, 800.0), (2, 400.0), (4, 300.0), (8, 50.0))]  # fmt: skip
    assert add_efficiency(points, "batch_size") == 8  # every efficiency >= LINEAR_EFFICIENCY
    assert [p["linear_efficiency"] for p in points] == [1.0, 1.0, 800 / 300 / 4, 2.0]
    points[2]["steps_to_target"] = 500.0  # 1.6x at 4x: below LINEAR_EFFICIENCY
    assert LINEAR_EFFICIENCY > 1.6 / 4
    assert add_efficiency(points, "batch_size") == 2  # the first miss ends it
    points[0]["reached"] = False  # the base is the first point that reached the target
    assert add_efficiency(points, "batch_size") == 2
    assert points[0]["linear_efficiency"] is None and points[1]["linear_efficiency"] == 1.0
    for point in points:
        point["reached"] = False
    assert add_efficiency(points, "batch_size") is None


def test_scaling_without_the_real_digits_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        reproduce_main(["scaling", "--out", str(tmp_path / "o"), "--mnist-dir", str(tmp_path)])
    message = str(exited.value.code)
    assert message.startswith("error: scaling: the real MNIST digits are not in")
    assert "\n" not in message


@pytest.mark.parametrize("command", ["generic_adam", "scaling"])
def test_out_that_is_a_file_is_one_error_line(tmp_path, command):
    (tmp_path / "o").write_text("")
    with pytest.raises(SystemExit) as exited:
        reproduce_main([command, "--out", str(tmp_path / "o"), "--quick"])
    assert str(exited.value.code) == f"error: --out {tmp_path / 'o'} is a file, not a folder"


# ----------------------------------------------------------------- the quick experiments
@pytest.fixture(scope="module")
def generic_quick(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "disabled")
    out = tmp_path_factory.mktemp("generic_adam")
    mp.chdir(out)
    try:
        yield out, generic_adam(out, quick=True)
    finally:
        mp.undo()


def _cell(summary, problem, r, s):
    (point,) = [p for p in summary["points"] if (p["problem"], p["r"], p["s"]) == (problem, r, s)]
    return point


@pytest.mark.slow
def test_generic_adam_quick_writes_every_cell_of_both_problems(generic_quick):
    out, summary = generic_quick
    on_disk = json.loads((out / "generic_adam.json").read_text())
    assert on_disk["points"] == summary["points"]
    grid = summary["grid"]
    assert len(grid["r"]) >= 2 and len(grid["s"]) >= 2
    for problem in ("online", "stochastic"):
        cells = {(p["r"], p["s"]) for p in summary["points"] if p["problem"] == problem}
        assert cells == {(r, s) for r in grid["r"] for s in grid["s"]}
    for point in summary["points"]:
        assert set(point) >= POINT_KEYS
        assert point["in_region"] == (0 < point["r"] <= 2 * point["s"] < 2)
        assert -1.0 <= point["final_x"] <= 1.0 and point["avg_regret"] >= 0.0
        assert point["rounds"] == summary["rounds"][point["problem"]]
    assert {p["in_region"] for p in summary["points"]} == {True, False}
    for suffix in (".png", ".pdf"):
        assert (out / f"generic_adam{suffix}").stat().st_size > 10_000


@pytest.mark.slow
def test_inside_the_region_a_longer_second_moment_memory_ends_nearer_the_optimum(generic_quick):
    """What the grid measures: at s = 1/2 (inside for both r) r = 1 (v_t the mean of past g^2,
    AdamNC) ends nearer x = -1 than r = 1/4, whose beta_2t = 1 - 1/t^(1/4) stays far below
    the counterexample's period of 101 rounds, so it fails as Adam does (x -> +1)."""
    _, summary = generic_quick
    for problem in ("online", "stochastic"):
        long, short = _cell(summary, problem, 1.0, 0.5), _cell(summary, problem, 0.25, 0.5)
        assert long["in_region"] and short["in_region"]
        assert long["distance_to_optimum"] < short["distance_to_optimum"]
        assert short["final_x"] > 0.5  # Adam's failure, inside the region at this T


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured false at both sizes run (4e3 rounds here, 3e4 in docs/generic_adam.json; "
    "README 'Generic Adam'): small r fails inside the region as Adam does, and r > 2s (v_t "
    "frozen early: SGD-like steps) converges outside it; the region is a sufficient condition "
    "for T -> infinity, not a finite-T boundary",
)
def test_points_inside_the_region_end_nearer_the_optimum_than_outside_online(generic_quick):
    _, summary = generic_quick
    online = [p for p in summary["points"] if p["problem"] == "online"]
    inside = [p["distance_to_optimum"] for p in online if p["in_region"]]
    outside = [p["distance_to_optimum"] for p in online if not p["in_region"]]
    assert sum(inside) / len(inside) < sum(outside) / len(outside)


@pytest.mark.slow
def test_scaling_quick_steps_fall_with_batch_and_with_ddp_processes(tmp_path, no_wandb):
    summary = scaling(tmp_path, quick=True)
    assert (
        json.loads((tmp_path / "scaling.json").read_text())["batch_size"] == summary["batch_size"]
    )
    by_batch = [p for p in summary["batch_size"] if p["task"] == "synthetic"]
    by_world = [p for p in summary["world_size"] if p["task"] == "synthetic"]
    for point in by_batch + by_world:
        assert {"batch_size", "steps_to_target", "world_size", "linear_efficiency"} <= set(point)
        assert point["reached"]
        assert point["diag/eff_lr/median"] > 0 and point["diag/gamma_neg_frac"] is not None
        # StopAtTarget ended the run within one training step of the target
        (rounds_run,) = point["rounds_run_per_seed"]
        assert rounds_run - point["steps_to_target"] < 25
    steps = [p["steps_to_target"] for p in sorted(by_batch, key=lambda p: p["batch_size"])]
    assert steps == sorted(steps, reverse=True) and steps[0] > steps[-1]
    assert [p["world_size"] for p in by_world] == [1, 2]  # real processes
    one, two = by_world
    b = summary["tasks"]["synthetic"]["per_process_batch"]
    assert (one["batch_size"], two["batch_size"]) == (b, 2 * b)  # global batch N * b
    assert two["steps_to_target"] < one["steps_to_target"]
    # one DDP process is the plain run with the same batch (rank 0 draws what B = b draws)
    (same,) = [p for p in by_batch if p["batch_size"] == b]
    assert one["steps_to_target"] == same["steps_to_target"]
    # a larger batch averages away the noise in v_t, so the effective step grows
    effective = [p["diag/eff_lr/median"] for p in sorted(by_batch, key=lambda p: p["batch_size"])]
    assert effective == sorted(effective)
    for suffix in (".png", ".pdf"):
        assert (tmp_path / f"scaling{suffix}").stat().st_size > 10_000


def test_scaling_redraw_recomputes_from_the_json_alone(tmp_path):
    sweep = [{"task": "synthetic", "batch_size": b, "world_size": 1, "steps_to_target": s,
              "reached": s is not None, "rounds_run_per_seed": [1000],
              "diag/gamma_neg_frac": 0.0, "diag/eff_lr/median": 0.01 * b}
             for b, s in ((1, None), (2, 400.0), (4, 200.0))]  # fmt: skip
    info = {"synthetic": {"target": 0.1, "target_meaning": "x", "per_process_batch": 2}}
    (tmp_path / "scaling.json").write_text(
        json.dumps({"tasks": info, "batch_size": sweep, "world_size": sweep[1:]})
    )
    reproduce_main(["scaling", "--out", str(tmp_path), "--redraw"])
    summary = json.loads((tmp_path / "scaling.json").read_text())
    assert summary["tasks"]["synthetic"]["linear_speedup_up_to_batch_size"] == 4
    assert [p["speedup"] for p in summary["batch_size"]] == [None, 1.0, 2.0]
    assert (tmp_path / "scaling.png").stat().st_size > 10_000


def test_figures_redraw_from_their_json(tmp_path):
    points = [{"problem": p, "r": r, "s": s, "in_region": in_region(r, s), "final_x": r - s,
               "avg_regret": 0.1 + r * s} for p in ("online", "stochastic")
              for r in (0.5, 1.0) for s in (0.25, 1.25)]  # fmt: skip
    grid = {"configs": {"online": "a", "stochastic": "b"}, "grid": {"r": [0.5, 1.0], "s": [0.25, 1.25]},
            "rounds": {"online": 10, "stochastic": 10}, "points": points}  # fmt: skip
    plot_generic_adam(grid, tmp_path / "g")
    (tmp_path / "generic_adam.json").write_text(json.dumps(grid))
    reproduce_main(["generic_adam", "--out", str(tmp_path), "--redraw"])
    assert (tmp_path / "generic_adam.pdf").stat().st_size > 5_000
    sweep = [{"task": "synthetic", "batch_size": b, "world_size": 1, "steps_to_target": 100.0 / b,
              "reached": True, "diag/gamma_neg_frac": 0.0, "diag/eff_lr/median": 0.01 * b}
             for b in (1, 2, 4)]  # fmt: skip
    info = {"synthetic": {"target": 0.1, "target_meaning": "x", "per_process_batch": 1}}
    plot_scaling({"tasks": info, "batch_size": sweep, "world_size": sweep}, tmp_path / "s")
    for name in ("g.png", "g.pdf", "s.png", "s.pdf"):
        assert (tmp_path / name).stat().st_size > 5_000
