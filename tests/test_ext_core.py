"""The extension's plumbing: build info, threads, DLPack views and their validation."""
import numpy as np
import pytest
import torch
from torch.utils.dlpack import to_dlpack

import semvis_ext
from semvis_ext import _C


def test_info():
    info = semvis_ext.info()
    assert info["version"] == semvis_ext.__version__ == _C.__version__
    assert isinstance(info["cuda_built"], bool)
    assert info["cuda_device_count"] == (torch.cuda.device_count() if info["cuda_built"] else 0)
    assert info["num_threads"] >= 1


def test_threads_roundtrip():
    semvis_ext.set_num_threads(3)
    assert semvis_ext.get_num_threads() == 3
    semvis_ext.set_num_threads(0)
    assert semvis_ext.get_num_threads() >= 1
    with pytest.raises(TypeError):
        semvis_ext.set_num_threads(1.5)


def _fwd(x, y, idx):
    _C.weldon_forward(x, None, None, 1, -1.0, 1, -1.0, 1.0, False, True, y, idx, 0)


def test_numpy_arrays_cross_via_dlpack():
    x = np.random.rand(2, 3, 4, 5).astype(np.float32)
    y = np.empty((2, 3), np.float32)
    idx = np.empty((2, 3, 2), np.int32)
    _fwd(x, y, idx)  # objects with __dlpack__
    np.testing.assert_allclose(y, x.reshape(2, 3, -1).max(-1) + x.reshape(2, 3, -1).min(-1), rtol=1e-6)


def test_readonly_output_is_refused():
    x = np.random.rand(1, 1, 2, 2).astype(np.float32)
    y = np.empty((1, 1), np.float32)
    y.flags.writeable = False
    idx = np.empty((1, 1, 2), np.int32)
    cap = y.__dlpack__(max_version=(1, 0))  # versioned capsule carries the read-only flag
    with pytest.raises(ValueError, match="output must be writable"):
        _fwd(x, cap, idx)


def test_not_a_tensor_and_consumed_capsule():
    x = torch.randn(1, 1, 2, 2)
    y, idx = torch.empty(1, 1), torch.empty(1, 1, 2, dtype=torch.int32)
    with pytest.raises(TypeError, match="input must be a tensor or array"):
        _fwd([1, 2], to_dlpack(y), to_dlpack(idx))
    cap = to_dlpack(x)
    torch.utils.dlpack.from_dlpack(cap)  # consumes it
    with pytest.raises(TypeError, match="already consumed"):
        _fwd(cap, to_dlpack(y), to_dlpack(idx))


def test_negative_strides_and_unsupported_dtypes_are_refused():
    x = np.random.rand(1, 1, 2, 4).astype(np.float32)[..., ::-1]
    y, idx = np.empty((1, 1), np.float32), np.empty((1, 1, 2), np.int32)
    with pytest.raises((ValueError, BufferError), match="negative strides|stride"):
        _fwd(x, y, idx)
    with pytest.raises(TypeError, match="unsupported element type"):
        _fwd(torch.zeros(1, 1, 2, 2, dtype=torch.complex64), to_dlpack(torch.empty(1, 1)), to_dlpack(torch.empty(1, 1, 2, dtype=torch.int32)))


def test_wrong_output_shapes_and_dtypes():
    x = torch.randn(2, 3, 4, 5)
    idx = torch.empty(2, 3, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"output must have shape \[2, 3\]"):
        _fwd(to_dlpack(x), to_dlpack(torch.empty(3, 2)), to_dlpack(idx))
    with pytest.raises(ValueError, match="output must have dtype float32"):
        _fwd(to_dlpack(x), to_dlpack(torch.empty(2, 3, dtype=torch.float64)), to_dlpack(idx))
    with pytest.raises(ValueError, match="indices must be contiguous"):
        _fwd(to_dlpack(x), to_dlpack(torch.empty(2, 3)), to_dlpack(torch.empty(2, 3, 4, dtype=torch.int32)[..., ::2]))


def test_lazy_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, semvis_ext; print('torch' in sys.modules, 'semvis_ext._C' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_every_public_name_resolves_to_what_it_names():
    """Each _LAZY name is the function/class of its op module (a module only for nn / reference), and one
    name per op holds across layers: semvis_ext/ops/<op>.py, semvis_ext/reference/<op>.py, csrc/<op>."""
    import importlib
    import inspect
    import pathlib
    import types

    for name, module in semvis_ext._LAZY.items():
        value = getattr(semvis_ext, name)
        if name in ("nn", "reference"):
            assert isinstance(value, types.ModuleType) and value.__name__ == module
        else:
            assert inspect.isfunction(value) or inspect.isclass(value), name
            assert value is getattr(importlib.import_module(module), name)
    ref = semvis_ext.reference
    assert callable(ref.region_pool) and callable(ref.quantized_ap) and callable(ref.kdtree_search)
    from semvis_ext.reference import hamming_topk, video_track, weldon_pool  # noqa: F401

    root = pathlib.Path(semvis_ext.__file__).parent
    csrc = root.parent / "csrc"
    for op in ("weldon", "hamming", "quantized_ap", "region_pool", "video"):
        assert (root / "ops" / f"{op}.py").is_file() and (root / "reference" / f"{op}.py").is_file(), op
        if csrc.is_dir():  # source checkout
            assert (csrc / op / f"{op}.h").is_file() and (csrc / "bindings" / f"{op}_bindings.cpp").is_file(), op
