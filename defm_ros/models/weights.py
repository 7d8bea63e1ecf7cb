"""Finding and strictly loading checkpoints (DeFM .pth, Theia .safetensors, LingBot-Depth model.pt):
`load_model` is the one way every family's weights get into a network.

Resolution order (SPEC §2): explicit path > the package's models/ folder > Hugging Face cache >
download from the Hub. A checkpoint is data, never code: .pth files are read with
torch.load(weights_only=True), .safetensors files with safetensors (no pickle at all).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # torch is imported where a checkpoint is read: `defm-ros --help` and errors stay fast
    import torch
    from torch import nn

from ..config import DEFAULT_DENSE_LEVEL
from .registry import REFINERS, ModelSpec

RANDOM = "random"
log = logging.getLogger("defm_ros")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or does not fit the model; the text says which and why.

    Where the text names the option that takes a checkpoint path, it writes `option("weights")`; str()
    spells it in `syntax`, the form of the tool in use: the Python API's by default; the CLI and the node
    set theirs at start-up (`--weights FILE`, `weights:=FILE`), so that each error reads as its user typed."""

    syntax: ClassVar[Callable[[str], str]] = staticmethod(lambda name: f"{name}=PATH")

    @staticmethod
    def option(name: str) -> str:
        return f"\x00{name}\x00"

    def __str__(self) -> str:
        parts = str(self.args[0] if self.args else "").split("\x00")
        return "".join(self.syntax(part) if i % 2 else part for i, part in enumerate(parts))


def models_dir() -> Path:
    """Where users drop checkpoints: $DEFM_ROS_MODELS, else the package's (or repo's) models/ folder."""
    env = os.environ.get("DEFM_ROS_MODELS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "models"
    if here.is_dir():
        return here
    try:  # installed with colcon: share/defm_ros/models
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("defm_ros")) / "models"
    except Exception:
        return here


def download_hint(spec: ModelSpec) -> str:
    folder = (models_dir() / spec.local_file).parent
    return (
        f"get it with `huggingface-cli download {spec.hub_repo} {spec.hub_file} --local-dir {folder}` "
        f"(or from https://huggingface.co/{spec.hub_repo}/resolve/main/{spec.hub_file}) on a machine "
        f"with internet access and copy it there, or pass its path with "
        f"{CheckpointError.option('refine_weights' if spec.name in REFINERS else 'weights')}"
    )


def resolve_weights(spec: ModelSpec, weights: str | os.PathLike | None) -> Path:
    """The checkpoint file to load for `spec`; downloads only when nothing local is found.

    huggingface_hub decides where the Hub is and whether to use it: HF_ENDPOINT (a mirror), proxies,
    HF_HUB_OFFLINE, and its cache. One quick request to the endpoint first (hub_reachable) spares an
    offline robot huggingface_hub's retries (23 s measured) before the clear error.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            raise CheckpointError(f"{path} is a folder; name the checkpoint file in it "
                                  f"(e.g. {path / spec.hub_file})")
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist; {download_hint(spec)}")
        return path
    local = models_dir() / spec.local_file
    if local.is_file():
        return local
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:
        raise CheckpointError(f"no {spec.local_file} in {models_dir()} and huggingface_hub is missing; "
                              f"{download_hint(spec)}") from exc
    online = not constants.HF_HUB_OFFLINE and hub_reachable(constants.ENDPOINT)
    if online:
        log.info("looking for %s on %s (%s)", spec.hub_file, constants.ENDPOINT, spec.hub_repo)
    try:
        return Path(hf_hub_download(repo_id=spec.hub_repo, filename=spec.hub_file, local_files_only=not online))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} is not reachable"
        raise CheckpointError(f"no {spec.local_file} in {models_dir()} or the Hugging Face cache, and {why}; "
                              f"{download_hint(spec)}") from None
    except Exception as exc:
        raise CheckpointError(
            f"could not download {spec.hub_file} from {spec.hub_repo} on {constants.ENDPOINT} "
            f"({type(exc).__name__}: {exc}); {download_hint(spec)}") from exc


def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """One request to `endpoint` through huggingface_hub's own HTTP session (its proxies and headers)."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - requests' or httpx's connection errors alike
        return False


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict (possibly under "model"), read as data only: safetensors, or a weights-only .pth."""
    return read_checkpoint(path)[0]


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, model_config or None), read as data only. LingBot-Depth's model.pt is a dict
    {"model_config": kwargs of the model, "model": state dict}; DeFM's .pth files are a state dict,
    possibly under "model"; Theia's are safetensors."""
    import torch

    if Path(path).stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted download or copy? Fetch it again")
    if Path(path).suffix == ".safetensors":
        return _read_safetensors(path), None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "Unsupported class" in text:
            detail = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), "")
            raise CheckpointError(
                f"{path} is not a plain weights file: it holds Python objects that would have to run as code "
                f"to load, which is refused (weights_only=True). Details: {detail}") from exc
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (truncated or corrupt?); it was read with "
                              "weights_only=True and nothing in it was run") from exc
    except EOFError as exc:
        raise CheckpointError(f"{path} ends early ({Path(path).stat().st_size} bytes): truncated by an interrupted "
                              "download or copy? Fetch it again") from exc
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                              f"{type(exc).__name__}: {exc}") from exc
    config = obj.get("model_config") if isinstance(obj, dict) else None
    if config is not None and not isinstance(config, dict):
        raise CheckpointError(f"{path}: its model_config is a {type(config).__name__}, not a dict of model kwargs")
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (got {type(obj).__name__})")
    return obj, config


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors' SafetensorError, or an OS error
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                              f"{type(exc).__name__}: {exc}") from exc


@dataclass
class Split:
    """A checkpoint's keys sorted for one variant. `ours`: the network's keys under the model's own names (prefix
    stripped, a newer layout's names mapped); `stray`: keys of nothing known (as the file names them); `skipped`:
    the keys left out on purpose, counted by skipped prefix; `file_names`: our name -> the file's, where they
    differ; `layout`: the family's newer layout when the file is in it ("" otherwise)."""

    ours: dict[str, torch.Tensor]
    stray: list[str]
    skipped: dict[str, int]
    file_names: dict[str, str] = field(default_factory=dict)
    layout: str = ""


def newer_name(key: str, rules: tuple[tuple[str, str], ...]) -> str:
    """`key` (one of our parameter names) as the family's newer layout names it: the first rule that matches."""
    for pattern, replacement in rules:
        renamed, hits = re.subn(pattern, replacement, key)
        if hits:
            return renamed
    return key


def backbone_state(state: dict[str, torch.Tensor], spec: ModelSpec) -> Split:
    """Sort a checkpoint's keys for `spec` (Split). A file that holds any of the newer layout's names is read in
    that layout (spec.fam.newer_names, e.g. transformers 5's ViT names) and mapped onto ours, key by key; a name of
    the older layout in it is stray, so that a file is read in one layout or refused, never a mixture."""
    prefix, ours, stray, skipped = spec.checkpoint_prefix, {}, [], {}
    for key, value in state.items():
        head = next((p for p in spec.skipped_prefixes if key.startswith(p)), None)
        if head is not None:
            skipped[head.rstrip(".")] = skipped.get(head.rstrip("."), 0) + 1
        elif key.startswith(prefix):
            ours[key[len(prefix):]] = value
        else:
            stray.append(key)
    if not spec.fam.newer_names:
        return Split(ours, stray, skipped)
    renamed = {n: k for k in state_shapes(spec.name) if (n := newer_name(k, spec.fam.newer_names)) != k}
    if not any(k in renamed for k in ours):
        return Split(ours, stray, skipped)
    older = set(renamed.values())
    stray += [prefix + k for k in ours if k in older]
    mapped = {renamed.get(k, k): v for k, v in ours.items() if k not in older}
    return Split(mapped, stray, skipped, {k: n for n, k in renamed.items()}, spec.fam.newer_layout)


def missing_heads(split: Split, spec: ModelSpec) -> list[str]:
    """The skipped groups a file lacks although it holds others, where they come together (spec.skipped_together:
    Theia's translator heads, one per teacher of its release): such a file is another release's."""
    if not (spec.skipped_together and split.skipped):
        return []
    return [p.rstrip(".") for p in spec.skipped_prefixes if p.rstrip(".") not in split.skipped]


@functools.cache
def state_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a variant's state dict, built on the meta device where its constructor allows."""
    import torch

    from . import build_model

    try:
        with torch.device("meta"):
            model = build_model(name)
    except NotImplementedError:  # torchvision's RegNet computes its widths with real tensors
        model = build_model(name)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _guess_variant(state: dict[str, torch.Tensor], exclude: str) -> str | None:
    """Which other zoo variant these keys and shapes belong to, if any (each read its own way)."""
    from . import MODELS

    for name, spec in MODELS.items():
        split = backbone_state(state, spec)
        if (name != exclude and not split.stray and not missing_heads(split, spec)
                and state_shapes(name) == {k: tuple(v.shape) for k, v in split.ours.items()}):
            return name
    return None


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")


def _misfit(own: dict[str, torch.Tensor], split: Split, spec: ModelSpec) -> list[str]:
    """What does not fit, each key named as the file names it (or would, for a missing one)."""
    pre, state = spec.checkpoint_prefix, split.ours

    def named(k: str) -> str:
        return pre + split.file_names.get(k, k) if split.layout else pre + k

    missing = sorted(named(k) for k in set(own) - set(state))
    unexpected = sorted({pre + k for k in set(state) - set(own)} | set(split.stray))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    parts = [f"{len(missing)} missing keys: {_few(missing)}"] if missing else []
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatches: " + _few(
            [f"{named(k)} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]))
    if split.layout and parts:
        parts.append(f"read in {split.layout}, as its keys are; a file holds them or the older names, not both")
    absent = missing_heads(split, spec)
    if absent:
        parts.append(f"it holds the training-time heads {', '.join(split.skipped)} but not {', '.join(absent)}: "
                     f"a {spec.name} file holds all {len(spec.skipped_prefixes)} or none")
    return parts


def load_strict(model: nn.Module, checkpoint: dict[str, torch.Tensor], spec: ModelSpec, source: str) -> dict[str, int]:
    """Fill every parameter from the checkpoint and account for every key, or say exactly what does not
    fit. Returns the key groups left out on purpose (spec.skipped_prefixes), with their counts."""
    split = backbone_state(checkpoint, spec)
    own = model.state_dict()
    parts = _misfit(own, split, spec)
    if parts:
        guess = _guess_variant(checkpoint, spec.name)
        hint = f" It looks like a {guess} checkpoint." if guess else ""
        if (set(split.ours) - set(own) or split.stray) and spec.fam.unexpected_keys_hint:
            hint += f" ({spec.fam.unexpected_keys_hint})"
        raise CheckpointError(f"{source} does not fit {spec.name}: " + "; ".join(parts) + "." + hint)
    if split.layout:
        log.info("%s: read in %s", source, split.layout)
    model.load_state_dict(split.ours, strict=True)
    return split.skipped


@dataclass
class Loaded:
    """A network with its weights and where they came from (the stream description's provenance)."""

    net: nn.Module
    weights: str  # the checkpoint's path, or RANDOM
    sha256: str = ""
    skipped: dict[str, int] = field(default_factory=dict)  # key groups left out on purpose, with counts

    @property
    def random(self) -> bool:
        return self.weights == RANDOM


def load_model(spec: ModelSpec, weights: str | os.PathLike | None,
               dense_level: str = DEFAULT_DENSE_LEVEL) -> Loaded:
    """Resolve, read and strictly load a variant's checkpoint, on the CPU, in eval mode; "random": random
    weights (the caller says so out loud). A family whose checkpoints carry their architecture is built from it."""
    from . import build_model

    if weights is not None and str(weights) == RANDOM:
        return Loaded(build_model(spec.name, dense_level).eval(), RANDOM)
    path = resolve_weights(spec, weights)
    state, config = read_checkpoint(path)
    if spec.fam.config_in_checkpoint and config is None:
        raise CheckpointError(f"{path} has no model_config: a {spec.name} checkpoint is a dict "
                              "{'model_config': ..., 'model': state dict}")
    try:
        net = build_model(spec.name, dense_level=dense_level, config=config).eval()
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    skipped = load_strict(net, state, spec, str(path))
    if skipped:
        log.info("%s: left out the training-time keys %s", path.name,
                 ", ".join(f"{group}.* ({n})" for group, n in skipped.items()))
    return Loaded(net, str(path), file_sha256(path), skipped)
