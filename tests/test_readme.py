"""The README's code runs as written, and returns what the README says it returns."""
import pathlib
import re

import jax.numpy as jnp
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_step_example_runs_and_returns_the_metrics_it_lists():
    text = README.read_text()
    [code] = re.findall(r"```python\n(.*?)```", text, re.S)
    # The example's only free name: a batch of images, uint8 as the README allows.
    scope = {"images_NHWC": np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3),
                                                               dtype=np.uint8)}
    exec(compile(code, str(README), "exec"), scope)
    state, metrics = scope["state"], scope["metrics"]
    assert int(state.step) == 1
    listed = re.search(r"^- `metrics`: (.*?); all float32", text, re.S | re.M).group(1)
    assert sorted(metrics) == sorted(re.findall(r"`(\w+)`", listed))
    for name, value in metrics.items():
        assert value.dtype == jnp.float32 and np.isfinite(value), name
