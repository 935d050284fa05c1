"""Model FLOPs counted from the shapes of every matmul and convolution in a function's
jaxpr (XLA's cost analysis does not see cuDNN convolutions on GPU)."""
import math

import jax
from jax.extend import core as jex_core


def _conv_flops(eqn) -> float:
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    out = eqn.outvars[0].aval
    dn = eqn.params["dimension_numbers"]
    rhs_spec = dn.rhs_spec  # (out feature dim, in feature dim, *spatial dims)
    taps = math.prod(rhs.shape[d] for d in rhs_spec[2:]) * rhs.shape[rhs_spec[1]]
    # A dilated input (transposed convolution) is mostly zeros: count the taps that are not.
    taps /= math.prod(eqn.params.get("lhs_dilation") or (1,))
    return 2.0 * math.prod(out.shape) * taps / max(1, eqn.params.get("batch_group_count", 1))


def _dot_flops(eqn) -> float:
    lhs = eqn.invars[0].aval
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    out = eqn.outvars[0].aval
    return 2.0 * math.prod(out.shape) * math.prod(lhs.shape[d] for d in lhs_contract)


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jex_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jex_core.Jaxpr):
                yield item


def count_jaxpr(jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "dot_general":
            total += _dot_flops(eqn)
        else:
            subs = list(_sub_jaxprs(eqn))
            if name == "cond":  # One branch runs.
                total += max((count_jaxpr(j) for j in subs), default=0.0)
                continue
            times = eqn.params.get("length", 1) if name == "scan" else 1
            total += times * sum(count_jaxpr(j) for j in subs)
    return total


def count(fn, *args) -> float:
    """FLOPs of one call of ``fn(*args)`` (multiply-adds count 2)."""
    return count_jaxpr(jax.make_jaxpr(fn)(*args).jaxpr)
