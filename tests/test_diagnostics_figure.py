"""The diagnostics figure script runs end to end and its series say what the README claims."""

from __future__ import annotations

import numpy as np

from lit_amsgrad import diagnostics_figure as fig


def test_trailing_mean_skips_unlogged_steps():
    values = np.array([np.nan, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(fig.trailing_mean(values), [np.nan, 1.0, 0.5, 2 / 3])


def test_figure_written_and_series_match_the_paper(tmp_path):
    results = fig.main(["--out", str(tmp_path), "--periods", "3"])
    assert (tmp_path / "diagnostics_synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    adam, amsgrad = results["Adam (paper mode)"], results["AMSGrad (paper mode)"]
    later = slice(fig.PERIOD + 1, None)  # past the first period alpha_t's decay no longer wins
    assert np.nanmean(adam["diag/gamma_neg_frac"][later]) > 0.9
    assert np.nanmax(amsgrad["diag/gamma_neg_frac"]) == 0.0
    assert np.isnan(adam["diag/vhat_active_frac"]).all()
    assert np.mean(amsgrad["diag/vhat_active_frac"][later]) > 0.9
