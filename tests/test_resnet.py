import pytest
import torch

from semvis.models import load_torchvision_weights, resnet


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_shapes_and_state_dict_names(name):
    m = resnet(name, width=8, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 96)
    f = m(x)
    assert f.shape == (2, m.out_channels, 2, 3)
    assert m.classify(x).shape == (2, 5)
    keys = set(m.state_dict())  # torchvision's names
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer4.0.downsample.0.weight", "fc.bias"} <= keys


@pytest.mark.parametrize("name,blocks", [("resnet34", 16), ("resnet101", 33), ("resnet152", 50)])
def test_depths(name, blocks):
    m = resnet(name, width=4)
    assert sum(len(getattr(m, f"layer{i}")) for i in range(1, 5)) == blocks


def test_load_roundtrip_and_errors(tmp_path):
    a = resnet("resnet18", width=8, num_classes=3)
    b = resnet("resnet18", width=8)  # no classifier: fc.* is dropped on load
    p = tmp_path / "w.pth"
    torch.save(a.state_dict(), p)
    load_torchvision_weights(b, p)
    x = torch.randn(1, 3, 32, 32)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x))
    with pytest.raises(ValueError, match="do not match"):
        load_torchvision_weights(resnet("resnet34", width=8), p)
    with pytest.raises(FileNotFoundError):
        load_torchvision_weights(b, tmp_path / "missing.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable weights file"):
        load_torchvision_weights(b, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="unknown backbone"):
        resnet("resnet19")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        b(torch.randn(1, 1, 32, 32))


def test_unreadable_weights_files_get_our_message(tmp_path):
    from semvis.models import load_torchvision_weights, resnet

    m = resnet("resnet18", width=4)
    (tmp_path / "w.pth").write_text("not weights\n")
    with pytest.raises(ValueError, match="not a readable weights file") as e:
        load_torchvision_weights(m, tmp_path / "w.pth")
    assert "weights_only" not in str(e.value)
    torch.save([1, 2], tmp_path / "l.pth")
    with pytest.raises(ValueError, match="must hold a state dict"):
        load_torchvision_weights(m, tmp_path / "l.pth")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_torchvision_weights(m, tmp_path / "none.pth")
