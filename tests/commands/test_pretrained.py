"""``model.pretrained``: a local checkpoint file loaded through the path users take (config →
build), with weights_only=True, and every problem with it a config error before the start."""

from pathlib import Path

import pytest
import torch

from fedsim.config import ConfigError
from fedsim.models import CheckpointError, create_model_and_transforms
from fedsim.records import load_float_state

SMALL = ["rounds=1", "data.train_size=40", "data.test_size=20", "clients.num=2", "clients.per_round=2",
         "attack.malicious=[0]"]


def _load(path, overrides=()):
    from fedsim.runner import load

    return load(path, [*SMALL, *overrides])


def _config(tmp_path, model_table: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text("[model]\n" + model_table)
    return path


def _outputs(model, tokenizer):
    model.eval()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokenizer(["a photo of a star", "a red circle"]))


@pytest.mark.parametrize("name", ["fedsim-tiny-resnet", "fedsim-tiny-vit"])
def test_a_saved_checkpoint_round_trips_through_config_and_build(tmp_path, monkeypatch, name):
    from fedsim.app import build

    original, _, tokenizer = create_model_and_transforms(name, seed=123)
    torch.save(original.state_dict(), tmp_path / "weights.pt")
    monkeypatch.setattr(build, "warm_start", lambda *a, **k: pytest.fail("the warm start must not run"))
    cfg = _load(_config(tmp_path, f'name = "{name}"\npretrained = "weights.pt"\n'))  # relative to the file
    assert cfg.model.init == "pretrained" and cfg.model.pretrained == str(tmp_path / "weights.pt")
    server = build.build_server(cfg, log=lambda *_: None)
    loaded, _, _ = create_model_and_transforms(name, seed=0)
    fresh = _outputs(loaded, tokenizer)
    load_float_state(loaded, server.initial)
    for a, b, c in zip(_outputs(original, tokenizer), _outputs(loaded, tokenizer), fresh):
        assert torch.equal(a, b) and not torch.equal(a, c)
    # the resolved config (config.toml of the run) loads again
    again = tmp_path / "resolved.toml"
    again.write_text(server.cfg.to_toml())
    assert _load(again).model.pretrained == cfg.model.pretrained


def test_an_open_clip_training_checkpoint_loads_too(tmp_path):
    original, _, tokenizer = create_model_and_transforms("fedsim-tiny-resnet", seed=5)
    wrapped = {"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}}
    torch.save(wrapped, tmp_path / "epoch_3.pt")
    loaded, _, _ = create_model_and_transforms("fedsim-tiny-resnet", pretrained=tmp_path / "epoch_3.pt")
    assert all(torch.equal(a, b) for a, b in zip(_outputs(original, tokenizer), _outputs(loaded, tokenizer)))


class _Planted:
    """Unpickling this runs code: it touches a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_that_pickles_an_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    state = create_model_and_transforms("fedsim-tiny-resnet")[0].state_dict()
    torch.save({**state, "extra": _Planted(marker)}, tmp_path / "planted.pt")
    with pytest.raises(ConfigError) as e:
        _load(_config(tmp_path, 'pretrained = "planted.pt"\n'))
    for fragment in ("model.pretrained:", "planted.pt", "weights_only=True", "Unsupported global"):
        assert fragment in str(e.value), (fragment, str(e.value))
    with pytest.raises(CheckpointError, match="Unsupported global"):  # the load itself refuses it too
        create_model_and_transforms("fedsim-tiny-resnet", pretrained=tmp_path / "planted.pt")
    assert not marker.exists()


def test_problems_with_the_checkpoint_are_config_errors(tmp_path):
    torch.save(create_model_and_transforms("fedsim-tiny-resnet")[0].state_dict(), tmp_path / "resnet.pt")
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    cases = [
        ('pretrained = "missing.pt"\n', ["model: pretrained=", "missing.pt", "no such file"]),
        ('pretrained = "folder"\n', ["is a folder without open_clip_model.safetensors or "
                                      "open_clip_pytorch_model.bin", "allowed: a checkpoint file (torch.save("
                                      "model.state_dict(), path) or .safetensors) or such a folder"]),
        ('pretrained = "resnet.pt"\ninit = "warm"\n', ["init='warm' contradict each other", "set it to 'pretrained'"]),
        ('pretrained = "resnet.pt"\ninit = "scratch"\n', ["init='scratch' contradict"]),
        ('init = "pretrained"\n', ["init='pretrained' needs pretrained = a checkpoint file"]),
        ('pretrained = "notes.pt"\n', ["model.pretrained:", "notes.pt is not a checkpoint torch.load(weights_only=True) can read"]),
        ('pretrained = "list.pt"\n', ["list.pt holds a list, not a state dict"]),
        ('name = "fedsim-tiny-vit"\npretrained = "resnet.pt"\n',
         ["resnet.pt does not fit model.name='fedsim-tiny-vit'", "missing visual.class_embedding",
          "unexpected visual.bn1.weight", "shape visual.conv1.weight: (8, 3, 3, 3) in the file, (96, 3, 4, 4)"]),
    ]
    for table, fragments in cases:
        with pytest.raises(ConfigError) as e:
            _load(_config(tmp_path, table))
        for fragment in fragments:
            assert fragment in str(e.value), (table, fragment, str(e.value))


def test_the_warm_start_default_is_unchanged():
    cfg = _load(None)
    assert cfg.model.init == "warm" and cfg.model.pretrained is None
    assert "pretrained" not in cfg.to_toml()


def _same_outputs(a, b, tokenizer) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_outputs(a, tokenizer), _outputs(b, tokenizer)))


def test_a_state_dict_without_num_batches_tracked_loads_as_torch_allows(tmp_path):
    # (issue #24) fedsim's own warm-start files and many published ones lack the 19 BatchNorm
    # counters; torch's load_state_dict(strict=True) accepts that, and so must the config check
    original, _, tokenizer = create_model_and_transforms("fedsim-tiny-resnet", seed=7)
    state = {k: v for k, v in original.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) < len(original.state_dict())
    torch.save(state, tmp_path / "warm.pt")
    assert _load(_config(tmp_path, 'pretrained = "warm.pt"\n')).model.init == "pretrained"
    loaded, _, _ = create_model_and_transforms("fedsim-tiny-resnet", pretrained=tmp_path / "warm.pt")
    assert _same_outputs(original, loaded, tokenizer)
    # any other missing key is still refused, by name
    del state["visual.bn1.running_mean"]
    torch.save(state, tmp_path / "holed.pt")
    with pytest.raises(ConfigError, match=r"missing visual\.bn1\.running_mean \(1 in all\)"):
        _load(_config(tmp_path, 'pretrained = "holed.pt"\n'))


def test_safetensors_files_and_open_clip_cache_folders_load(tmp_path):
    from safetensors.torch import save_file

    original, _, tokenizer = create_model_and_transforms("fedsim-tiny-resnet", seed=9)
    state = {k: v.contiguous() for k, v in original.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    # open_clip's hub files as a local Hugging Face cache keeps them: the newest snapshot
    snap = tmp_path / "models--org--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    torch.save(state, snap / "open_clip_pytorch_model.bin")
    flat = tmp_path / "flat"
    flat.mkdir()
    save_file(state, str(flat / "open_clip_model.safetensors"))
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, flat / "open_clip_pytorch_model.bin")
    for where in ("model.safetensors", "models--org--tiny", "flat"):
        cfg = _load(_config(tmp_path, f'pretrained = "{where}"\n'))
        loaded, _, _ = create_model_and_transforms("fedsim-tiny-resnet", pretrained=cfg.model.pretrained)
        # "flat" holds both names: the safetensors file (the real weights) is read first
        assert _same_outputs(original, loaded, tokenizer), where


def test_a_damaged_safetensors_file_is_a_config_error_naming_it(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ConfigError, match=r"model\.pretrained: .*bad\.safetensors is not a safetensors file"):
        _load(_config(tmp_path, 'pretrained = "bad.safetensors"\n'))
