"""symfw.testing catches broken plugins (each check must be able to fail)."""

import pytest
import torch

import symfw
from symfw.core.interfaces import Combiner, InvariantMap, MatrixLieGroup, lorentz_generator
from symfw.testing import check_combiner, check_encoder, check_group, check_input_transform, check_invariant_map


def builtin(kind, name):
    return symfw.get_registry().get(kind, name)


@pytest.mark.parametrize("name", ["lorentz", "so3", "so2-z", "so12-z", "se2", "boost-z", "longitudinal", "trivial"])
def test_builtin_groups_pass(name):
    result = check_group(builtin("group", name))
    assert result["metric_error"] < 1e-12


def test_check_group_rejects_a_non_lorentz_generator():
    class Scaling(MatrixLieGroup):
        """Dilations: not metric preserving."""

        name = "scaling"

        def generators(self, dtype=torch.float64, device=None):
            return torch.eye(4, dtype=dtype).unsqueeze(0)

        generator_names = ("D",)

    with pytest.raises(AssertionError, match="not in the Lorentz algebra"):
        check_group(Scaling)


def test_check_group_rejects_samples_that_are_not_exp_of_the_generator():
    class Liar(MatrixLieGroup):
        """Claims Kz but samples x-boosts."""

        name = "liar"
        boosts = ("Kz",)

        def sample(self, n, generator=None, *, dtype=torch.float64, device=None, rng=None):
            theta = torch.rand(n, dtype=dtype, generator=rng)
            return torch.linalg.matrix_exp(theta[:, None, None] * lorentz_generator("Kx", dtype))

    with pytest.raises(AssertionError, match="is not exp|leave the span"):
        check_group(Liar)


def test_check_invariant_map_catches_a_non_invariant_map():
    class Energies(InvariantMap):
        """Energies: not Lorentz invariant."""

        name = "energies"
        group = "lorentz"

        def __call__(self, p4, mask):
            return p4[..., 0] * mask

    with pytest.raises(AssertionError, match="not invariant under lorentz"):
        check_invariant_map(Energies, builtin("group", "lorentz")())


def test_builtin_maps_combiners_and_encoders_pass():
    lorentz, longitudinal = builtin("group", "lorentz")(), builtin("group", "longitudinal")()
    check_invariant_map(builtin("invariants", "minkowski"), lorentz)
    check_invariant_map(builtin("invariants", "longitudinal"), builtin("group", "longitudinal")(
        builtin("group", "longitudinal").Options(max_rapidity=0.5)))
    assert longitudinal.name == "longitudinal"
    for name in ("weighted-pt", "concat", "sum"):
        check_combiner(builtin("combiner", name))
    for mode in ("weight-input", "context-input", "plain"):
        check_combiner(builtin("combiner", "concat"), {"mode": mode}, context_dim=2)
    check_encoder(builtin("encoder", "pfn"), {"phi": [8]})
    check_encoder(builtin("encoder", "mlp"), {"hidden": [8]}, in_features=5)


def test_check_combiner_catches_a_combiner_that_drops_a_subnet():
    class GeneralOnly(Combiner):
        """Ignores s."""

        name = "general-only"

        def __init__(self, options, latent_dim, context_dim):
            super().__init__(options, latent_dim, context_dim)
            self.out_features = latent_dim

        def forward(self, g, s, context):
            return g

    with pytest.raises(AssertionError, match="no gradient reaches the invariant latent"):
        check_combiner(GeneralOnly)


@pytest.mark.parametrize(
    "name, options, keeps",
    [
        ("spurions", {"set": ["beam"]}, "so2-z"),
        ("spurions", {"set": ["time"]}, "so3"),
        ("spurions", {"set": ["beam-axis"]}, "so12-z"),
        ("spurions", {"set": ["beam-plus"]}, "se2"),
        ("input", {"quantities": ["E-pz"]}, "se2"),
        ("input", {"quantities": ["E", "pz"]}, "so2-z"),
        ("input", {"quantities": ["pT", "m2"]}, "longitudinal"),
    ],
)
def test_builtin_input_transforms_keep_what_they_declare(name, options, keeps):
    assert check_input_transform(builtin("inputs", name), options)["keeps"] == keeps


def test_check_input_transform_catches_an_overclaiming_transform():
    from symfw.core.interfaces import InputTransform

    class PzClaimsRotations(InputTransform):
        """Appends pz but claims all rotations."""

        name = "pz-liar"
        keeps = "so3"

        def __call__(self, particles):
            return particles.replace(scalars=particles.p4[..., 3])

    with pytest.raises(AssertionError, match="not invariant under so3"):
        check_input_transform(PzClaimsRotations)
