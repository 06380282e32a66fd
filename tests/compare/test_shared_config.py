"""One project config over three different trace pairs: each pair uses part of it, the rest warns."""

import numpy as np
import pytest

import parity
from parity.errors import ConfigError

CONFIG = """
[tolerance.stages]
"attn.*" = { rtol = 1e-2 }
"solver.energy" = { rtol = 1e-3 }

[aliases]
pix0_vector_meters = "pix0_vector"

[ignore]
stages = ["timing.*"]
"""


def test_one_config_three_pairs(make_trace, tmp_path):
    cfg = tmp_path / "parity.toml"
    cfg.write_text(CONFIG)
    pairs = {
        "model": ({"attn.probs": np.ones(4)}, {"attn.probs": np.ones(4) * 1.005}),
        "simulator": ({"pix0_vector": np.ones(3), "timing.step": np.ones(1)},
                      {"pix0_vector_meters": np.ones(3), "timing.step": np.ones(1) * 9}),
        "solver": ({"solver.energy": np.ones(2)}, {"solver.energy": np.ones(2) * 1.0005}),
    }
    for name, (r, c) in pairs.items():
        diff = parity.compare_traces(make_trace(f"{name}-r.trace", r), make_trace(f"{name}-c.trace", c), config=str(cfg))
        assert diff.passed, name
        assert len(diff.unused_config) >= 2, name  # the entries meant for the other pairs
        assert all("matches no" in u for u in diff.unused_config)
        with pytest.raises(ConfigError, match="match nothing"):
            parity.compare_traces(diff.ref_path, diff.cand_path, config=str(cfg), strict=True)
