"""The diagnostics figure script runs end to end, writes PNG and PDF, is titled from its data,
and its series say what the README claims."""

from __future__ import annotations

import numpy as np

from lit_amsgrad import diagnostics_figure as fig


def test_trailing_mean_skips_unlogged_steps():
    values = np.array([np.nan, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(fig.trailing_mean(values), [np.nan, 1.0, 0.5, 2 / 3])


def test_figure_written_and_series_match_the_paper(tmp_path):
    results = fig.main(["--out", str(tmp_path), "--periods", "3"])
    assert (tmp_path / "diagnostics_synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "diagnostics_synthetic.pdf").read_bytes()[:5] == b"%PDF-"
    adam, amsgrad = results["Adam (paper mode)"], results["AMSGrad (paper mode)"]
    later = slice(fig.PERIOD + 1, None)  # past the first period alpha_t's decay no longer wins
    assert np.nanmean(adam["diag/gamma_neg_frac"][later]) > 0.9
    assert np.nanmax(amsgrad["diag/gamma_neg_frac"]) == 0.0
    assert np.isnan(adam["diag/vhat_active_frac"]).all()
    assert np.mean(amsgrad["diag/vhat_active_frac"][later]) > 0.9


def test_title_follows_the_data(tmp_path, monkeypatch):
    """Series where Adam ends at +0.53 after a few steps are titled with +0.53 and with the
    measured share of steps whose effective step grew, not with the paper's conclusion."""
    from matplotlib.figure import Figure

    saved, savefig = [], Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda f, *a, **k: saved.append(f) or savefig(f, *a, **k)
    )
    steps = 2 * fig.PERIOD
    ramp = np.linspace(0.0, 1.0, steps)

    def series(x_end: float, gamma: float, active: float) -> dict[str, np.ndarray]:
        return {
            "x": x_end * ramp,
            "diag/gamma_neg_frac": np.full(steps, gamma),
            "diag/vhat_active_frac": np.full(steps, active),
            "diag/eff_lr/max": np.full(steps, 0.1),
        }

    results = {
        "Adam (paper mode)": {
            **series(0.53, 0.25, 0.0),
            "diag/vhat_active_frac": np.full(steps, np.nan),
        },
        "AMSGrad (paper mode)": series(-0.98, 0.0, 1.0),
    }
    paths = fig.draw(results, tmp_path)
    assert [p.name for p in paths] == ["diagnostics_synthetic.png", "diagnostics_synthetic.pdf"]
    title = saved[-1]._suptitle.get_text()
    assert f"$T$ = {steps:,} steps" in title
    assert "Adam ends at $x_T$ = +0.53, AMSGrad at -0.98 (optimum $-1$)" in title
    assert "Adam 25%, AMSGrad 0%" in title
