"""MONAI's own bundle tools on both bundles: verify_metadata, verify_net_in_out, ckpt_export (TorchScript)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from monai.bundle import ConfigParser

from conftest import REPO, copy_bundle

SCHEMA = REPO / "bundles" / "meta_schema_20240725.json"


@pytest.mark.parametrize("name", ["resunet3d_segmentation", "resunet2d_segmentation"])
def test_monai_bundle_tools(tmp_path, name):
    bundle = copy_bundle(name, tmp_path)
    configs = bundle / "configs"

    def bundle_cli(*args):
        result = subprocess.run(
            [sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True, timeout=300, cwd=bundle
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    log = bundle_cli("verify_metadata", "--meta_file", str(configs / "metadata.json"), "--filepath", str(SCHEMA))
    assert "metadata is verified with no error" in log
    log = bundle_cli(
        "verify_net_in_out", "network_def", "--meta_file", str(configs / "metadata.json"),
        "--config_file", str(configs / "inference.json"),
    )  # fmt: skip
    assert "data shape of network is verified with no error" in log

    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    bundle_cli(
        "ckpt_export", "network_def", "--filepath", str(bundle / "models" / "model.ts"),
        "--ckpt_file", str(bundle / "models" / "model.pt"), "--meta_file", str(configs / "metadata.json"),
        "--config_file", str(configs / "inference.json"),
    )  # fmt: skip
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"))
    shape = (1, 1, 40, 40, 40) if name.startswith("resunet3d") else (1, 1, 64, 64)
    x = torch.rand(shape)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
