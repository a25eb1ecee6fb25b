"""A fully connected encoder: hidden Linear → BatchNorm → ReLU layers, then a linear latent."""

from pydantic import Field

from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import Encoder, LayerSizes, Options
from symfw.core.nn import MLP


class MLPEncoder(Encoder):
    """MLP on a flat feature vector (invariants, or flattened four-vectors)."""

    name = "mlp"
    consumes = "features"

    class Options(Options):
        hidden: LayerSizes = Field(default_factory=lambda: [512, 256, 256, 128])
        batchnorm: bool = True

    def __init__(self, options, in_features, latent_dim):
        super().__init__(options, in_features, latent_dim)
        self.net = MLP(in_features, options.hidden, latent_dim, batchnorm=options.batchnorm)

    def forward(self, features):
        return self.net(features)


@hookimpl
def register_encoders(register):
    register(MLPEncoder)
