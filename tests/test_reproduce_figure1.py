"""Figure 1 at tiny sizes: the vector figure is written, the title follows the data, every
curve is inside its axes, and the regret's log-log slope is what a power law gives."""

from __future__ import annotations

import json
import math
import sys

import pytest

from lit_amsgrad import reproduce, reproduce_figure1


def drawn_figures(monkeypatch) -> list:
    """The figures saved from now on (``Figure.savefig`` recorded, then done as usual)."""
    from matplotlib.figure import Figure

    saved, savefig = [], Figure.savefig

    def record(fig, *args, **kwargs):
        saved.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


def fake_result(final_x: float, avg_regret: list[float], optimum: float = -1.0) -> dict:
    t = [1000 * (i + 1) for i in range(len(avg_regret))]
    return {
        "final_x": final_x,
        "final_x_per_seed": [final_x],
        "tail_mean_x": final_x,
        "optimum": optimum,
        "avg_regret": avg_regret[-1],
        "rounds": t[-1],
        **reproduce_figure1.regret_slope(t, [ti * r for ti, r in zip(t, avg_regret, strict=True)]),
        "history": {"t": t, "x": [final_x * (i + 1) / len(t) for i in range(len(t))],
                    "avg_regret": avg_regret},
    }  # fmt: skip


def test_title_follows_the_data_not_the_papers_conclusion(tmp_path, monkeypatch):
    """A short run where Adam ends at +0.53 is titled with +0.53, not with "Adam goes to
    x = +1"; regret curves that reach 0 or below stay inside their (non-log) axes."""
    saved = drawn_figures(monkeypatch)
    results = {
        "online": {
            "adam": fake_result(0.53, [0.9, 0.5, 0.2, -0.1]),
            "amsgrad": fake_result(-0.98, [0.8, 0.4, 0.3, 0.25]),
        },
        "stochastic": {
            "adam": fake_result(0.31, [1.2, 0.7, 0.0]),
            "amsgrad": fake_result(-0.42, [0.6, -0.2, -0.3]),
        },
    }
    reproduce_figure1.plot_figure1(results, tmp_path / "figure1.png")
    assert saved, "plot_figure1 saved no figure"
    fig = saved[-1]
    title = fig._suptitle.get_text()
    assert "+1" not in title and "goes to" not in title
    assert "Adam ends at $x_T$ = +0.53, AMSGrad at -0.98 (optimum -1)" in title
    assert "Adam ends at $x_T$ = +0.31, AMSGrad at -0.42 (optimum -1)" in title
    for ax in fig.axes:
        low, high = sorted(ax.get_ylim())
        for line in ax.get_lines():
            ys = [float(y) for y in line.get_ydata()]
            assert all(low <= y <= high for y in ys), (ax.get_title(), line.get_label(), ys)
        if ax.get_yscale() == "log":
            assert all(y > 0 for line in ax.get_lines() for y in line.get_ydata())


def test_figure1_writes_the_vector_figure(tmp_path):
    results = {"online": {"adam": fake_result(0.2, [0.9, 0.5])}, "stochastic": {}}
    paths = reproduce_figure1.plot_figure1(results, tmp_path / "figure1.png")
    assert [p.name for p in paths] == ["figure1.png", "figure1.pdf"]
    assert (tmp_path / "figure1.pdf").read_bytes()[:5] == b"%PDF-"
    assert (tmp_path / "figure1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("power", [0.5, 1.0])
def test_regret_slope_of_a_power_law(power):
    t = [1000 * k for k in range(1, 101)]
    fit = reproduce_figure1.regret_slope(t, [3.7 * ti**power for ti in t])
    assert fit["regret_slope"] == pytest.approx(power, abs=1e-9)
    assert fit["regret_slope_reason"] is None
    assert fit["regret_slope_window"] == [10_000, 100_000]  # the last decade only
    assert fit["regret_slope_points"] == 91


def test_regret_slope_is_fitted_on_the_last_decade_only_and_null_where_regret_is_not_positive():
    t = [1000 * k for k in range(1, 101)]
    early_negative = [(-5.0 if ti < 10_000 else 2.0 * ti) for ti in t]
    assert reproduce_figure1.regret_slope(t, early_negative)["regret_slope"] == pytest.approx(1.0)
    negative = [2.0 * math.sqrt(ti) if ti != 50_000 else -1.0 for ti in t]
    fit = reproduce_figure1.regret_slope(t, negative)
    assert fit["regret_slope"] is None
    assert "R_T <= 0 at T = 50000" in fit["regret_slope_reason"]
    assert reproduce_figure1.regret_slope([1000], [3.0])["regret_slope"] is None


def test_figure1_json_has_the_rate_and_the_pdf_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["reproduce"])
    out = tmp_path / "out"
    reproduce.main(["figure1", "--out", str(out), "--optimizers", "adam", "amsgrad",
                    "--online-rounds", "3000", "--stochastic-rounds", "2000", "--seeds", "2"])  # fmt: skip
    assert (out / "figure1.pdf").read_bytes()[:5] == b"%PDF-"
    summary = json.loads((out / "figure1.json").read_text())
    for problem, rounds in (("online", 3000), ("stochastic", 2000)):
        for result in summary[problem].values():
            assert result["optimum"] == -1.0
            assert result["regret"] == pytest.approx(result["avg_regret"] * rounds)
            assert result["regret_over_sqrt_t"] == pytest.approx(result["regret"] / rounds**0.5)
            assert result["regret_slope_window"] == [1000, rounds]  # the rounds >= T/10
            assert result["regret_slope_points"] == rounds // 1000
            if result["regret"] > 0 and result["regret_slope"] is not None:
                assert math.isfinite(result["regret_slope"])
            else:
                assert result["regret_slope"] is None and result["regret_slope_reason"]
