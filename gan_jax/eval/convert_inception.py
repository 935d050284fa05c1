"""Converts pytorch-fid's FID Inception weights to the .npz gan_jax loads without PyTorch.

  pip install "gan_jax[torch]"   # PyTorch is needed for this step only
  python -m gan_jax.eval.convert_inception --pth=pt_inception-2015-12-05-6726825d.pth \
      --out=pt_inception-2015-12-05-6726825d.npz
"""
import pathlib

from absl import app, flags

from gan_jax import files
from gan_jax.errors import exit_on_error
from gan_jax.eval import inception_weights as iw

def convert(pth, out) -> str:
    """Reads ``pth`` with PyTorch, checks every array against the Flax model, writes ``out``;
    returns the sha256 of ``out``."""
    pth = pathlib.Path(pth)
    if not pth.is_file():
        raise iw.InceptionWeightsError(f"No file at {pth}. " + iw.how_to_get(out))
    try:
        import torch
    except ImportError:
        raise iw.InceptionWeightsError('Converting needs PyTorch: pip install "gan_jax[torch]" '
                                       "(loading the converted file does not).") from None
    state = torch.load(pth, map_location="cpu", weights_only=True)
    flat = iw.from_state_dict({k: v.detach().float().numpy() for k, v in state.items()})
    return iw.save(flat, out, {"source": pth.name, "source_sha256": files.file_sha256(pth)})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    out = flags.FLAGS.out or iw.default_path()
    with exit_on_error():
        digest = convert(flags.FLAGS.pth, out)
    print(f"wrote {out} (sha256 {digest}); use it with --inception_weights={out} or "
          f"{iw.ENV}={out}")


if __name__ == "__main__":
    # Defined here, not at import: the module is also a library (``convert``), and flags
    # defined at import clash with any other entry point's in the same process.
    flags.DEFINE_string("pth", None, f"pytorch-fid's {iw.PTH_NAME}.", required=True)
    flags.DEFINE_string("out", None, "The .npz to write; default: the cache location.")
    app.run(main)
