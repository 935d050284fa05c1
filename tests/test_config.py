import ml_collections
import pytest

from gan_jax.trainer import config as config_lib
from gan_jax.errors import ConfigError


def test_defaults_validate():
    c = config_lib.validate(config_lib.defaults())
    assert c.model.z_dim == 100 and c.loss == "non_saturating"


def test_partial_config_is_completed():
    partial = ml_collections.ConfigDict({"model": {"name": "dcgan"}, "batch_size": 32})
    c = config_lib.validate(partial)
    assert c.model.name == "dcgan" and c.model.z_dim == 100 and c.batch_size == 32


def test_unknown_key_is_named():
    c = config_lib.defaults()
    c.unlock()
    c.model.widht = 3
    with pytest.raises(ConfigError, match="'model.widht'"):
        config_lib.validate(c)


def test_wrong_type_is_named():
    c = config_lib.defaults().to_dict()
    c["optimizer"]["g"]["learning_rate"] = "fast"
    with pytest.raises(ConfigError, match="'optimizer.g.learning_rate'.*float"):
        config_lib.validate(ml_collections.ConfigDict(c))
    c = config_lib.defaults()
    c.optimizer.g.learning_rate = 1  # An int where a float is expected is fine.
    config_lib.validate(c)


def test_dispatch_multiples():
    c = config_lib.defaults()
    c.log_every = 15
    with pytest.raises(ConfigError, match="'log_every'.*steps_per_dispatch"):
        config_lib.validate(c)
    c = config_lib.defaults()
    c.batch_size = 0
    with pytest.raises(ConfigError, match="'batch_size'"):
        config_lib.validate(c)


@pytest.mark.parametrize("key,value,message", [
    ("checkpoint.keep", 0, "'checkpoint.keep' must be >= 1, got 0"),
    ("nan_rollbacks", -1, "'nan_rollbacks' must be >= 0"),
    ("ema.start", -5, "'ema.start' must be >= 0"),
    ("ema.decay", 2.0, r"'ema.decay' must be in \[0, 1\].*got 2.0"),
    ("dataset.resolution", -1, "'dataset.resolution' must be >= 0"),
    ("dataset.max_examples", -5, "'dataset.max_examples' must be >= 0"),
    ("optimizer.d.decay", "cosine", "'optimizer.d.decay' must be one of \\('none', 'linear'\\)"),
    ("wandb.mode", "disabled", "'wandb.mode' must be one of"),
])
def test_out_of_range_values_are_named(key, value, message):
    c = config_lib.defaults()
    group, _, name = key.rpartition(".")
    (c[group] if group else c)[name] = value
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(c)


@pytest.mark.parametrize("key,value,message", [
    ("dtype", "float64", "config.dtype must be one of"),
    ("model.name", "vgg", "config.model.name must be one of"),
])
def test_unknown_names_are_config_errors(key, value, message):
    # ConfigError, so entry points print the message instead of a traceback.
    from gan_jax import models
    c = config_lib.defaults()
    group, _, name = key.rpartition(".")
    (c[group] if group else c)[name] = value
    with pytest.raises(ConfigError, match=message):
        models.build(c.model, (28, 28, 1), c.dtype)


def test_unknown_loss_and_augmentation_are_config_errors():
    from gan_jax import losses
    from gan_jax.data import augment
    with pytest.raises(ConfigError, match="Unknown loss 'foo'"):
        losses.get("foo")
    with pytest.raises(ConfigError, match="Unknown augmentation"):
        augment.make("color,blur")


def test_diff_lists_changed_keys():
    a = config_lib.to_dict(config_lib.defaults())
    c = config_lib.defaults()
    c.model.g_width = 64
    c.seed = 3
    lines = config_lib.diff(a, config_lib.to_dict(c))
    assert lines == ["model.g_width: 256 -> 64", "seed: 0 -> 3"]
