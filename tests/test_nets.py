import pytest
import timm
import torch

from distill.nets import DigitNet


def test_digitnet_is_overparameterized_on_purpose():
    params = sum(p.numel() for p in DigitNet().parameters())
    assert 450_000 <= params <= 550_000


def test_digitnet_maps_digits_to_ten_logits():
    assert DigitNet().eval()(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_digitnet_is_in_timms_registry():
    model = timm.create_model("digitnet")
    assert isinstance(model, DigitNet)
    assert "digitnet" in timm.list_models("digitnet*")


def test_digitnet_has_the_convnext_v2_stages_1_1_3_1():
    from timm.models.convnext import ConvNeXtBlock

    model = DigitNet()
    depths = [sum(isinstance(m, ConvNeXtBlock) for m in stage) for stage in model.stages]
    assert depths == [1, 1, 3, 1]
    block = next(m for m in model.modules() if isinstance(m, ConvNeXtBlock))
    assert block.mlp.grn is not None and block.gamma is None


def test_digitnets_stem_starts_at_full_resolution_or_patchifies():
    digits = torch.zeros(2, 1, 28, 28)
    conv3x3 = DigitNet(stem="conv3x3").eval()
    assert conv3x3.stem[0](digits).shape[-2:] == (28, 28)
    assert conv3x3.stem(digits).shape[-2:] == (14, 14)
    patchify = DigitNet(stem="patchify").eval()
    assert patchify.stem[0](digits).shape[-2:] == (14, 14)
    assert patchify(digits).shape == (2, 10)
    with pytest.raises(ValueError, match="Unknown stem"):
        DigitNet(stem="patches")


def test_fast_grn_computes_timms_grn_and_its_gradients():
    from timm.layers.grn import GlobalResponseNorm

    from distill.nets import FastGlobalResponseNorm

    torch.manual_seed(0)
    reference, fast = GlobalResponseNorm(12), FastGlobalResponseNorm(12)
    for layer in (reference, fast):
        layer.weight.data = torch.linspace(-1, 1, 12)
        layer.bias.data = torch.linspace(0.5, -0.5, 12)
    x = torch.randn(4, 5, 5, 12)
    x[1, :, :, 3] = 0  # a silent channel: the norm's gradient there is 0, not NaN
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.testing.assert_close(fast(x_fast), reference(x_ref))
    (reference(x_ref) ** 2).sum().backward()
    (fast(x_fast) ** 2).sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad)
    torch.testing.assert_close(fast.weight.grad, reference.weight.grad)
    torch.testing.assert_close(fast.bias.grad, reference.bias.grad)


def test_residual_convnet_adds_the_input_where_widths_match():
    from distill.nets import ConvNet, Residual

    torch.manual_seed(0)
    net = ConvNet(channels=(4, 6), convs_per_stage=2, separable=True, residual=True).eval()
    wrapped = [m for m in net.features if isinstance(m, Residual)]
    assert len(wrapped) == 2  # the second layer of each stage; the first ones change the width
    x = torch.randn(2, 4, 8, 8)
    block = wrapped[0]
    torch.testing.assert_close(block(x), x + block[1](block[0](x)))


def test_global_max_pool_reads_the_largest_activation():
    from distill.nets import ConvNet

    net = ConvNet(channels=(2,), global_pool="max").eval()
    features = torch.zeros(1, 2, 4, 4)
    features[0, 1, 3, 0] = 5.0
    pooled = net.head[:2](features)
    torch.testing.assert_close(pooled, torch.tensor([[0.0, 5.0]]))


def test_convnet_micro_stays_under_a_thousand_parameters():
    assert sum(p.numel() for p in timm.create_model("convnet_micro").parameters()) < 1000


@pytest.mark.parametrize("imports", ["import timm, distill", "import distill, timm"])
def test_import_distill_registers_the_networks_with_timm_in_either_order(imports):
    import subprocess
    import sys

    code = f"{imports}; print(type(timm.create_model('digitnet')).__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "DigitNet", done.stderr


def test_import_distill_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, distill, distill.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "False", done.stderr
