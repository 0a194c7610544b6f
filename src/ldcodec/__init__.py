"""ldcodec: lossy image compression with a diffusion prior in the latent space of a VAE."""

__version__ = "0.1.0"
