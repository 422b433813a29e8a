"""ResNeXt blocks with more than 4 paths: prefix variants, and whole-mask graphs
for kept-path sets that have no variant graph of their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from budget_edge.export.exporter import _export_backbone, _mask_chain, _Writer
from budget_edge.models.resnext import CifarResNeXt

from .conftest import close, realistic, run_graph


@pytest.mark.slow
def test_prefix_blocks_export_prefixes_and_any_mask_as_a_whole_graph(tmp_path, exporter):
    torch.manual_seed(0)
    net = realistic(CifarResNeXt(11, cardinality=5, base_width=1, widen_factor=1), seed=7)
    writer = _Writer(tmp_path, exporter)
    with torch.no_grad():
        blocks, inputs = _export_backbone(writer, net)
    assert [b.variant_scheme for b in blocks] == ["prefix"] * 3
    assert [v.paths for v in blocks[1].variants] == [list(range(m)) for m in range(1, 6)]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        h = net.blocks[0](net.stem(x))
        for v in blocks[1].variants:
            close(
                run_graph(tmp_path / f"graphs/{v.graph}.onnx", h.numpy())[0],
                net.blocks[1](h, v.paths),
            )
        # Paths {1, 3} of block 0 and {0, 2, 4} of block 2 have no variant graph.
        mask = np.zeros(15, np.float32)
        mask[[1, 3, 10, 12, 14]] = 1
        chain = _mask_chain(writer, net, blocks, inputs, mask.astype(int).tolist())
        s = session_bytes(chain.SerializeToString())
        got = s.run(None, {"image": x.numpy()})[0]
        close(got, net(x, torch.from_numpy(np.tile(mask, (3, 1)))))


def session_bytes(data: bytes):
    import onnxruntime as ort

    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])
