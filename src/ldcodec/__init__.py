"""ldcodec: lossy image compression with a diffusion prior in the latent space of a VAE."""

__version__ = "0.1.0"


def load(name: str, device: str = "cpu"):
    """The codec of a shipped model (``ldcodec models`` lists them): :func:`ldcodec.zoo.load`."""
    from .zoo import load as load_shipped

    return load_shipped(name, device)
