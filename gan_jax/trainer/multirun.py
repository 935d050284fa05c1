"""Several runs in one program, as the config's ``runs`` group asks: which runs there are (seeds
crossed with a sweep of scalar hyperparameters), and the loop's per-run metric meter.

Run i is point ``i // seeds`` of the sweep (its values crossed in the order written) with
seed ``config.seed + i % seeds``: it trains as a single run of that config and seed would.
"""
import itertools

import numpy as np

from gan_jax import runs
from gan_jax.errors import ConfigError, DivergenceError

# Scalars a sweep may vary per run, and where each lives: in an optimizer's state
# (optax.inject_hyperparams) or in the step's closure.
OPTIMIZER_KEYS = ("learning_rate", "b1", "b2", "eps", "weight_decay")
STEP_KEYS = ("ema.decay", "gp_weight", "r1_weight", "vae.beta")
SWEEPABLE = tuple(f"optimizer.{p}.{k}" for p in "gd" for k in OPTIMIZER_KEYS) + STEP_KEYS


def parse_sweep(text: str) -> dict[str, list[float]]:
    """``"optimizer.g.learning_rate=1e-4,2e-4;ema.decay=0.999,0.9999"`` -> {key: values}."""
    sweep = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, eq, values = part.partition("=")
        key = key.strip()
        if not eq or not values.strip():
            raise ConfigError(f"Config key 'runs.sweep': {part!r} is not key=v1,v2,...; "
                              "e.g. 'optimizer.g.learning_rate=1e-4,2e-4;ema.decay=0.999'.")
        if key not in SWEEPABLE:
            raise ConfigError(f"Config key 'runs.sweep' names {key!r}, which cannot vary "
                              f"within one program; sweepable keys: {', '.join(SWEEPABLE)}. "
                              "Run a separate job for structural keys (loss, n_dis, width).")
        if key in sweep:
            raise ConfigError(f"Config key 'runs.sweep' names {key!r} twice.")
        try:
            sweep[key] = [float(v) for v in values.split(",")]
        except ValueError:
            raise ConfigError(f"Config key 'runs.sweep': the values of {key!r} must be "
                              f"numbers, got {values!r}.") from None
    return sweep


def points(sweep: str) -> list[dict]:
    """The points of a ``runs.sweep`` text, its values crossed in the order written: [{}]
    for none."""
    keys = parse_sweep(sweep)
    return [dict(zip(keys, values)) for values in itertools.product(*keys.values())]


def settings(config) -> list[dict]:
    """Each run's {"seed": ..., swept key: value}, in run order."""
    return [{"seed": config.seed + s, **point} for point in points(config.runs.sweep)
            for s in range(config.runs.seeds)]


def count(config) -> int:
    """How many runs ``config`` trains in one program."""
    return config.runs.seeds * len(points(config.runs.sweep))


def saved_runs(config: dict) -> tuple[int, list[dict]]:
    """A saved config's (config.json, a checkpoint's run info) ``runs.seeds`` and sweep
    points; older runs have no ``runs`` group."""
    r = {"seeds": 1, "sweep": "", **(config.get("runs") or {})}
    return r["seeds"], points(r["sweep"] or "")


def saved_count(config: dict) -> int:
    """``count`` of a saved config."""
    seeds, pts = saved_runs(config)
    return seeds * len(pts)


def check(config) -> None:
    """Refuses, naming the key, a ``runs`` group that cannot run (validate calls this)."""
    r = config.runs
    if r.seeds < 1:
        raise ConfigError(f"Config key 'runs.seeds' must be >= 1, got {r.seeds}.")
    if r.form not in ("", *runs.FORMS):
        raise ConfigError(f"Config key 'runs.form' must be '', 'vmap', 'loop' or 'map', got "
                          f"{r.form!r}.")
    sweep = parse_sweep(r.sweep)
    if count(config) == 1:
        return
    if config.parallel.mode != "jit" or config.dataset.pipeline != "device":
        raise ConfigError("Several runs in one program (runs.seeds > 1 or a runs.sweep) need "
                          "parallel.mode='jit' and dataset.pipeline='device'.")
    if config.nan_rollbacks:
        raise ConfigError("With several runs a diverging run is frozen, not rolled back; set "
                          "nan_rollbacks=0.")
    for key in sweep:
        if key.startswith("optimizer."):
            opt = config.optimizer[key.split(".")[1]]
            if key.endswith("learning_rate") and opt.decay != "none":
                raise ConfigError(f"Config key 'runs.sweep' varies {key}, which needs "
                                  f"{key.rsplit('.', 1)[0]}.decay='none'.")
        if key == "vae.beta" and config.model.name != "vae" or (
                key in ("gp_weight", "r1_weight") and config.model.name == "vae"):
            raise ConfigError(f"Config key 'runs.sweep' varies {key}, which a "
                              f"{config.model.name} run does not use.")


def with_run(config, setting: dict):
    """``config`` as the single run ``setting`` describes (its seed and swept values)."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        c.seed = setting["seed"]
        for key, value in setting.items():
            if key != "seed":
                *group, leaf = key.split(".")
                node = c
                for g in group:
                    node = node[g]
                node[leaf] = value
        c.runs.seeds, c.runs.sweep = 1, ""
    return c


def label(setting: dict) -> str:
    """A run's short description, e.g. "seed 1, optimizer.g.learning_rate=0.0002"."""
    return ", ".join([f"seed {setting['seed']}"]
                     + [f"{k}={v:g}" for k, v in setting.items() if k != "seed"])


class RunsMeter:
    """The loop's meter for N runs: per-run sums of each metric over the steps a run was
    live; a run whose metrics turned NaN or Inf (``metrics["live"]`` 0) is frozen, said
    once, and left out from then on. Lines carry each metric's mean over the live runs,
    its std, and every live run's own value (``name/run<i>``)."""

    def __init__(self, num_runs: int, sums=None, counts=None, frozen=None, say=print):
        self.n, self.say = num_runs, say
        self.sums = {k: np.asarray(v, np.float64) for k, v in (sums or {}).items()}
        self.counts = np.asarray(counts if counts is not None else np.zeros(num_runs), np.int64)
        self.frozen = {int(k): v for k, v in (frozen or {}).items()}  # run -> step

    @classmethod
    def of(cls, run_info: dict, num_runs: int, say=print) -> "RunsMeter":
        saved = run_info.get("meter") or {}
        return cls(num_runs, saved.get("sums"), saved.get("counts"), saved.get("frozen"), say)

    @property
    def count(self) -> int:
        return int(self.counts.max(initial=0))

    def add(self, first_step: int, metrics_K: dict) -> None:
        """``metrics_K``: {name: [K, N]}, or a tuple of [k, N] parts."""
        from gan_jax import parallel
        # A metric may come as parts (one per call of the engine's program), joined here.
        host = {k: np.concatenate([np.asarray(p, np.float64).reshape(-1, self.n)
                                   for p in (v if isinstance(v, tuple) else (v,))])
                for k, v in parallel.to_host(metrics_K).items()}
        live = host.pop("live") > 0  # [K, N]
        for r in range(self.n):
            dead = np.flatnonzero(~live[:, r])
            if dead.size and r not in self.frozen:
                k = int(dead[0])
                bad = [name for name, v in host.items() if not np.isfinite(v[k, r])]
                self.frozen[r] = first_step + k + 1
                self.say(f"gan_jax: run {r} diverged at step {first_step + k + 1} "
                         f"({', '.join(bad) or 'non-finite values'}): frozen at its last "
                         f"finite state; the other runs go on.")
        if len(self.frozen) == self.n:
            raise DivergenceError(f"Every run diverged (steps {sorted(self.frozen.values())}). "
                                  "Training stopped; lower the learning rates, add a gradient "
                                  "penalty, or use float32.")
        for name, v in host.items():
            self.sums[name] = self.sums.get(name, np.zeros(self.n)) + np.where(live, v, 0).sum(0)
        self.counts = self.counts + live.sum(0)

    def state(self) -> dict:
        return {"sums": {k: v.tolist() for k, v in self.sums.items()},
                "counts": self.counts.tolist(), "frozen": dict(self.frozen)}

    def pop(self) -> dict:
        runs = [r for r in range(self.n) if self.counts[r] > 0]
        out = {}
        for name, s in self.sums.items():
            per_run = {r: s[r] / self.counts[r] for r in runs}
            values = np.array(list(per_run.values()))
            out[name] = float(values.mean())
            out[f"{name}_std"] = _std(values)
            out.update({f"{name}/run{r}": float(v) for r, v in per_run.items()})
        self.sums, self.counts = {}, np.zeros(self.n, np.int64)
        return out


def _std(values) -> float:
    """The sample standard deviation (ddof 1) of the runs' values; 0 for one run."""
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summary(values_by_run: dict[int, dict]) -> dict:
    """{name: {"mean", "std", "min", "max"}} over runs of {run: {name: value}}."""
    names = next(iter(values_by_run.values()))
    out = {}
    for name in names:
        v = np.array([vals[name] for vals in values_by_run.values()], np.float64)
        out[name] = {"mean": float(v.mean()), "std": _std(v), "min": float(v.min()),
                     "max": float(v.max())}
    return out
