"""How a network executes, without changing what it computes or what it saves: channels-last memory layout,
bfloat16 autocast on CPUs that have bf16 matrix units, and ``torch.compile``. Bundle flags switch all three;
their measured effect is in the 3D bundle's ``docs/experiments.md``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from monai_resunet.config_flags import as_bool

__all__ = [
    "to_channels_last",
    "cpu_has_bf16",
    "autocast_cpu_bf16",
    "CpuBf16Autocast",
    "OnnxRuntimeNetwork",
    "configure_execution",
]


def to_channels_last(network: nn.Module, enabled: bool = True) -> nn.Module:
    """Return ``network`` with its convolution weights in channels-last layout (``channels_last`` for 2D,
    ``channels_last_3d`` for 3D, picked from its first convolution), or unchanged when ``enabled`` is false
    or it has no 2D/3D convolution.

    A convolution whose weight is channels-last produces channels-last outputs, so inputs need no conversion
    and every later layer follows. The weights' values (and a saved ``state_dict``) are unchanged; only their
    strides are. Faster convolutions on CPU (measurements: the 3D bundle's ``docs/experiments.md``).

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


class CpuBf16Autocast(nn.Module):
    """Runs a wrapped module (a TorchScript export, which takes no Python hooks) under bfloat16 autocast on CPU
    inputs and hands back float32, as :func:`autocast_cpu_bf16`'s hooks do for an eager network.

    Args:
        module: the module to run, e.g. ``torch.jit.load("models/model.ts")``.

    Example::

        net = CpuBf16Autocast(torch.jit.load("models/model.ts"))
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._resunet_bf16_hooks = True  # marks it as already autocast, like the hooked eager network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=x.device.type == "cpu"):
            out = self.module(x)
        return out.float() if isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 else out


class OnnxRuntimeNetwork(nn.Module):
    """An ONNX export run by onnxruntime behind the ``nn.Module`` interface, so a bundle's inferers and
    post-processing run it unchanged. Inputs are passed as float32 CPU arrays; outputs come back on the input's
    device.

    Args:
        path: the ``.onnx`` file (``python -m monai.bundle onnx_export ...``).
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).

    Example (bundle command line, with ``handlers#0#_disabled_ true`` as no ``model.pt`` is loaded)::

        --network_def "$monai_resunet.networks.execution.OnnxRuntimeNetwork(@bundle_root + '/models/model.onnx')"
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime
        except ImportError as e:
            raise ImportError(f"{path}: running an ONNX model needs onnxruntime (pip install onnxruntime).") from e
        self.session = onnxruntime.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0]).to(x.device)


def autocast_cpu_bf16(network: nn.Module, enabled: bool = True) -> nn.Module:
    """Run ``network``'s forward under bfloat16 autocast when its input is on the CPU; outputs come back float32.

    MONAI's engines and inferers only autocast on CUDA (``amp=True``); this gives CPUs with bf16 matrix units
    (Intel AMX / AVX512-BF16, see :func:`cpu_has_bf16`) the same mixed precision. Weights, gradients and the
    optimizer stay float32 (autocast casts per operation), the ``state_dict`` is unchanged (forward hooks, no
    wrapper), and the network still scripts/exports as before (hooks are not part of the graph). A TorchScript module
    (which takes no hooks) comes back wrapped in :class:`CpuBf16Autocast` instead (measurements:
    the 3D bundle's ``docs/experiments.md``).

    Args:
        network: the network.
        enabled: install the hooks (``True``) or return the network unchanged, so a config can pass
            ``$monai_resunet.networks.cpu_has_bf16()``.

    Example::

        net = autocast_cpu_bf16(ResUNet(3, 1, 2), enabled=cpu_has_bf16())
    """
    if not enabled or getattr(network, "_resunet_bf16_hooks", None) is not None:
        return network
    if isinstance(network, torch.jit.ScriptModule):  # scripted modules take no Python hooks: wrap instead
        return CpuBf16Autocast(network)
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
