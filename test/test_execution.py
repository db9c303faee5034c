"""Execution modes of the sampling call: compiled (just in time or ahead of time) and CUDA-graph samplers
give the eager chunks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_checkpoint import WITH_IMAGE, make_model

from mvp_ros.policy import Policy
from mvp_ros.policy.execution import make_sampler, resolve_mode
from test_policy_api import image_observation


def unsaturated(head: str, **overrides):
    """A small untrained model whose last layer is scaled down, so most actions stay inside the limits
    and the chunks show the observations (a saturated chunk would match whatever the sampler did)."""
    model, _ = make_model(head, WITH_IMAGE, **overrides)
    with torch.no_grad():
        model.backbone.net[-1].weight.mul_(0.1)
        model.backbone.net[-1].bias.zero_()
    return model


@pytest.mark.parametrize("mode, head, overrides", [
    ("compile", "mvp", {}),
    ("aot", "mvp", {}),
    ("aot", "flow", {}),
    ("aot", "diffusion", {"diffusion_sampler": "ddim"}),
], ids=["compile-mvp", "aot-mvp", "aot-flow", "aot-ddim"])
def test_compiled_policy_acts_like_the_eager_one(mode, head, overrides):
    """torch.compile or AOTInductor (a C++ build on the CPU) of the whole fixed-shape call, images included,
    fed new observations through the policy's input tensors every call."""
    model = unsaturated(head, **overrides)
    eager, compiled = Policy(model, device="cpu", execution="eager"), Policy(model, device="cpu", execution=mode)
    assert compiled.execution == mode
    chunks = []
    for seed in range(3):
        chunks.append(compiled.act(image_observation(seed)))
        np.testing.assert_allclose(chunks[-1], eager.act(image_observation(seed)), rtol=1e-4, atol=1e-4)
    assert not np.allclose(chunks[0], chunks[1]) and not np.allclose(chunks[1], chunks[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; none here")
@pytest.mark.parametrize("head, overrides", [("mvp", {}), ("flow", {}), ("diffusion", {"diffusion_sampler": "ddim"})])
def test_cuda_graph_replay_gives_the_eager_chunks_for_new_inputs(head, overrides):
    model = unsaturated(head, **overrides).cuda().eval()
    inputs = {"joints": torch.zeros(1, 1, 3, device="cuda"),
              "camera": torch.zeros(1, 1, 12, 12, 3, dtype=torch.uint8, device="cuda")}
    with torch.inference_mode():
        graph = make_sampler(model, inputs, 4, "cuda_graph")
        for seed in range(3):  # new observations and noise written into the captured buffers
            obs = image_observation(seed)
            for key, value in obs.items():
                inputs[key][0, 0].copy_(torch.from_numpy(value))
            noise = torch.randn(4, model.config.chunk_dim, device="cuda")
            torch.testing.assert_close(graph(noise).clone(), model.sample_with_noise(inputs, noise, 4))


def test_auto_mode_runs_eagerly_on_a_cpu_and_bad_modes_are_refused():
    model, _ = make_model("mvp", WITH_IMAGE)
    assert Policy(model, device="cpu").execution == "eager"
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        resolve_mode("cuda_graph", model.config, torch.device("cpu"))
    with pytest.raises(ValueError, match="'jit' is not one of auto, eager, compile, aot, cuda_graph"):
        Policy(model, device="cpu", execution="jit")
    with pytest.raises(ValueError, match="aot compiles for a CPU; the policy runs on cuda"):
        resolve_mode("aot", model.config, torch.device("cuda"))
    ddpm, _ = make_model("diffusion", WITH_IMAGE, diffusion_sampler="ddpm")
    for mode in ("cuda_graph", "aot"):
        with pytest.raises(ValueError, match=f"{mode} cannot capture DDPM"):
            resolve_mode(mode, ddpm.config, torch.device("cuda" if mode == "cuda_graph" else "cpu"))
    assert resolve_mode("auto", ddpm.config, torch.device("cuda")) == "eager"
    assert resolve_mode("auto", model.config, torch.device("cuda")) == "cuda_graph"
