"""How a network executes, without changing what it computes or what it saves: channels-last memory layout,
bfloat16 autocast on CPUs that have bf16 matrix units, and ``torch.compile``. Bundle flags switch all three;
``pipelines/benchmark_speed.py`` measures the first two."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from monai_resunet.config_flags import as_bool

__all__ = ["to_channels_last", "cpu_has_bf16", "autocast_cpu_bf16", "configure_execution"]


def to_channels_last(network: nn.Module, enabled: bool = True) -> nn.Module:
    """Return ``network`` with its convolution weights in channels-last layout (``channels_last`` for 2D,
    ``channels_last_3d`` for 3D, picked from its first convolution), or unchanged when ``enabled`` is false
    or it has no 2D/3D convolution.

    A convolution whose weight is channels-last produces channels-last outputs, so inputs need no conversion
    and every later layer follows. The weights' values (and a saved ``state_dict``) are unchanged; only their
    strides are. Measured on the 2-core dev CPU (``pipelines/results/speed_benchmark.md``): a ResUNet 64³
    training step 1.26 s → 0.87 s, MONAI ``UNet`` 0.56 s → 0.38 s.

    Args:
        network: the network, already on its device.
        enabled: convert (``True``) or return it as is (``False``), so a config can switch it.

    Example::

        net = to_channels_last(ResUNet(3, 1, 2).to(device))
    """
    if not enabled:
        return network
    for module in network.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            return network.to(memory_format=torch.channels_last_3d)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            return network.to(memory_format=torch.channels_last)
    return network


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, read from ``/proc/cpuinfo``); elsewhere
    bf16 autocast is emulated and slower than float32, so it must stay off."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


class _AutocastHooks:
    """Forward pre/post hooks that run a module's forward under ``torch.autocast("cpu", bfloat16)`` and hand
    back float32, so losses, softmax, stitching and metrics stay in float32."""

    def __init__(self) -> None:
        self.contexts: list[torch.autocast] = []

    def enter(self, module: nn.Module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].device.type == "cpu":
            context = torch.autocast("cpu", dtype=torch.bfloat16)
        else:  # CUDA inputs: the engines' own AMP applies
            context = torch.autocast("cpu", enabled=False)
        context.__enter__()
        self.contexts.append(context)

    def exit(self, module: nn.Module, args, output):
        self.contexts.pop().__exit__(None, None, None)
        if isinstance(output, torch.Tensor) and output.dtype == torch.bfloat16:
            return output.float()
        return output


def autocast_cpu_bf16(network: nn.Module, enabled: bool = True) -> nn.Module:
    """Run ``network``'s forward under bfloat16 autocast when its input is on the CPU; outputs come back float32.

    MONAI's engines and inferers only autocast on CUDA (``amp=True``); this gives CPUs with bf16 matrix units
    (Intel AMX / AVX512-BF16, see :func:`cpu_has_bf16`) the same mixed precision. Weights, gradients and the
    optimizer stay float32 (autocast casts per operation), the ``state_dict`` is unchanged (forward hooks, no
    wrapper), and the network still scripts/exports as before (hooks are not part of the graph). Measured on the
    2-core dev CPU (AMX): a ResUNet 64³ training step 0.37 s → 0.25 s, MONAI ``UNet`` 0.20 s → 0.14 s
    (batch 2, channels-last).

    Args:
        network: the network.
        enabled: install the hooks (``True``) or return the network unchanged, so a config can pass
            ``$monai_resunet.networks.cpu_has_bf16()``.

    Example::

        net = autocast_cpu_bf16(ResUNet(3, 1, 2), enabled=cpu_has_bf16())
    """
    if not enabled or getattr(network, "_resunet_bf16_hooks", None) is not None:
        return network
    hooks = _AutocastHooks()
    network.register_forward_pre_hook(hooks.enter)
    network.register_forward_hook(hooks.exit, always_call=True)  # leave autocast even if forward raises
    network._resunet_bf16_hooks = hooks  # marks the network, so a second call does not stack hooks
    return network


def configure_execution(
    network: nn.Module,
    device: torch.device | str,
    channels_last: bool = False,
    cpu_bf16: bool = False,
    compile: bool = False,
) -> nn.Module:
    """Move ``network`` to ``device`` and apply the bundle's execution flags: :func:`to_channels_last`,
    :func:`autocast_cpu_bf16` (which only acts on CPU inputs) and ``torch.compile``. What the bundles' ``"network"``
    entries call.

    ``compile=True`` compiles the forward in place (``nn.Module.compile``, TorchInductor): the module, its
    ``state_dict`` keys and therefore every checkpoint stay as they are (``torch.compile(net)`` would wrap it and
    prefix every key with ``_orig_mod.``). The first calls pay the compilation (tens of seconds; again for each new
    input shape), so it pays off for long training runs on a GPU, not for a short CPU job.

    Example::

        net = configure_execution(ResUNet(3, 1, 2), "cpu", channels_last=True, cpu_bf16=cpu_has_bf16())
    """
    # the flags may come from the command line as "true"/"false" strings (see config_flags)
    network = to_channels_last(network.to(device), as_bool(channels_last))
    network = autocast_cpu_bf16(network, as_bool(cpu_bf16))
    if as_bool(compile):
        network.compile()
    return network
