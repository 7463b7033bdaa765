"""Model loading: the one module that turns a model name into a ready encoder.

A model is named `NAME` or `NAME:PRETRAINED_TAG` (any open_clip architecture and
tag), or `hf-hub:org/repo`, optionally with local weights from `--checkpoint`, or
by the name of a model card (built in, or saved in a library; see `model_store`).
Every loaded model gets a fingerprint (architecture plus a digest of its weights)
that the catalog stores beside each vector it makes; `fingerprints` remembers it per
weights file, so a model is hashed once, not on every start. Weights loaded from a
file are not randomly initialised first: every one of them is overwritten anyway.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
from torch.overrides import TorchFunctionMode

from indexer import fingerprints
from indexer.decode import InputSpec
from indexer.errors import CheckpointError, ModelNotAvailable, UnknownModel, UnknownModelName, WeightsUnreachable
from indexer.model_spec import DEFAULT_MODEL, PRECISIONS, SCHEMAS, TINY_MODEL, ModelSpec  # noqa: F401 (public names)
from indexer.model_store import find_card, is_known_architecture, list_cards, register_builtin_models

@dataclass
class Encoder:
    """A loaded dual encoder with everything needed to turn pixels and text into vectors."""

    spec: ModelSpec  # as it was named: what a library records to load the model again
    arch: str  # the open_clip architecture
    model: torch.nn.Module
    tokenizer: Callable[..., torch.Tensor]
    input_spec: InputSpec
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fingerprint: str
    dim: int
    device: torch.device
    # fp32 | fp16 (CUDA) | bf16 (autocast, CPUs with native bf16) | int8 (CPU: images by the ONNX Runtime
    # int8 copy, `indexer.quantised_export`; `model` keeps fp32 weights, texts are encoded at fp32,
    # or bf16 with `text_bf16`)
    precision: str = "fp32"
    # bf16 only: (the image tower it was made from, a copy with bf16 weights), made on the
    # first image batch. `model` keeps its fp32 weights for fine-tuning and the fingerprint.
    bf16_image_tower: tuple[torch.nn.Module, torch.nn.Module] | None = field(default=None, repr=False)
    # int8 at `auto` on a CPU that computes bf16 natively (bf16 is auto's next choice there): torch
    # encodes texts under bf16 autocast, as at bf16 (the int8 copy is the image tower's only).
    text_bf16: bool = False


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; any other value is used as given."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_precision(device: torch.device, requested: str = "auto") -> str:
    """`auto`: fp16 on CUDA; on a CPU, the first of `auto_cpu_candidates()` (int8 by ONNX Runtime or bf16
    autocast, by the CPU's flags), else fp32. The fidelity guard may still fall back along that list."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu":
        from indexer.precision_guard import auto_cpu_precision

        return auto_cpu_precision()
    return "fp32"


def resolve(spec: ModelSpec, home: Path | None = None) -> ModelSpec:
    """The spec that loads `spec`: a model card's name (built in, or saved in the library at
    `home`) becomes its architecture and weights file; any other spec is returned as is.

    Raises SavedModelError for an unreadable card, ModelNotAvailable for missing weights.
    """
    if spec.pretrained is not None or spec.checkpoint is not None:
        return spec
    card = find_card(spec.name, home)
    return spec if card is None else ModelSpec(card.arch, None, str(card.weights))


def load_encoder(spec: ModelSpec, device: str = "auto", precision: str = "auto", *, home: Path | None = None) -> Encoder:
    """Load a model ready to encode, looking model cards up in the package and the library at `home`.

    The fingerprint is taken from the fp32 weights, so every device and precision
    shares one model identity. Raises UnknownModel, ModelNotAvailable, CheckpointError
    or SavedModelError.
    """
    source = resolve(spec, home)
    if not is_known_architecture(source.name):
        raise UnknownModelName(spec.name)
    weights = _weights_file(source)
    stamp = fingerprints.FileStamp.of(weights) if weights is not None and home is not None else None
    model = _create(source)
    model.eval()
    fingerprint = fingerprints.cached(home, source.name, stamp) if home is not None and stamp is not None else None
    if fingerprint is None:
        fingerprint = fingerprint_of(source.name, model.state_dict())
        if home is not None and stamp is not None:
            fingerprints.remember(home, source.name, stamp, fingerprint, spec.label)
    dev = pick_device(device)
    chosen = pick_precision(dev, precision)
    text_bf16 = precision == "auto" and chosen == "int8" and _auto_has_bf16()
    if chosen == "fp16":
        model = model.half()
    elif chosen == "int8" and dev.type != "cpu":
        raise ModelNotAvailable("int8 precision runs on the CPU only; choose the cpu device")
    # int8 keeps the fp32 weights here: images go through a quantised ONNX copy (indexer.precision_guard),
    # not torch's dynamic int8, whose quantised-tensor functions torch deprecates.
    model = model.to(dev)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", 224)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    input_spec = InputSpec(
        height=h,
        width=w,
        resize_mode=pp.get("resize_mode", "shortest"),
        interpolation=pp.get("interpolation", "bicubic"),
        fill_color=int(pp.get("fill_color", 0)),
    )
    mean = tuple(float(x) for x in pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(x) for x in pp.get("std", open_clip.OPENAI_DATASET_STD))
    return Encoder(
        spec=spec,
        arch=source.name,
        model=model,
        tokenizer=open_clip.get_tokenizer(source.name),
        input_spec=input_spec,
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        fingerprint=fingerprint,
        dim=_embed_dim(model),
        device=dev,
        precision=chosen,
        text_bf16=text_bf16,
    )


def _auto_has_bf16() -> bool:
    from indexer.precision_guard import auto_cpu_candidates

    return "bf16" in auto_cpu_candidates()


def fingerprint_of(name: str, state_dict: dict[str, torch.Tensor]) -> str:
    """`ARCH@DIGEST`: the same weights give the same fingerprint in every process."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{name}@{h.hexdigest()[:20]}"


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read weights from safetensors, or a torch file with weights_only=True (never unpickled freely)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj: Any = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise many unrelated types here
        raise CheckpointError(f"checkpoint {path} cannot be read safely: {_one_line(e)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


class _QuietOpenClip(logging.Filter):
    """open_clip logs to the root logger while loading; clipdex raises its own one-line errors instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open_clip" not in record.pathname


def _create(spec: ModelSpec) -> torch.nn.Module:
    quiet = _QuietOpenClip()
    logging.getLogger().addFilter(quiet)
    try:
        return _create_model(spec)
    finally:
        logging.getLogger().removeFilter(quiet)


def _create_model(spec: ModelSpec) -> torch.nn.Module:
    if spec.checkpoint is not None:
        return _with_weights(spec.name, spec.checkpoint)
    if spec.name.startswith(SCHEMAS) or spec.pretrained:
        return _create_pretrained(spec)
    tags = open_clip.list_pretrained_tags_by_model(spec.name)
    hint = f" (tags: {', '.join(tags)})" if tags else ""
    raise ModelNotAvailable(
        f"{spec.name} has no weights: give a pretrained tag as {spec.name}:TAG{hint} or give a checkpoint file"
    )


def _with_weights(name: str, path: str) -> torch.nn.Module:
    with _SkipRandomInit():  # a strict load below overwrites every parameter and persistent buffer
        model = _create_untrained(name)
    state = _fit_shapes(load_state_dict(path), model)
    own = model.state_dict()
    # The model's own dtypes (an fp16 file loads as fp32, as a copying load would), contiguous.
    state = {k: v.to(own[k].dtype).contiguous() if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)  # no copy: the model takes the loaded tensors
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit architecture {name}: {_one_line(e)}") from None
    return model


def _create_untrained(name: str) -> torch.nn.Module:
    try:
        return open_clip.create_model(name, pretrained=None, load_weights=False, pretrained_text=False)
    except Exception as e:  # config look-up failures (e.g. hf-hub offline)
        raise ModelNotAvailable(f"cannot build {name}: {_one_line(e)}; {_FIX}") from None


class _SkipRandomInit(TorchFunctionMode):
    """Skip random fills while a model is built whose weights are all loaded next.

    Only random ops are skipped (filling with constants stays: non-persistent buffers
    such as the causal attention mask are built that way and never loaded). A
    torch-function mode is per thread, unlike patching `torch.nn.init`.
    """

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _RANDOM_FILLS:
            return args[0] if args else kwargs["tensor"]
        if func in _RANDOM_NEW:
            kwargs.pop("generator", None)
            return torch.empty(*args, **kwargs)
        return func(*args, **kwargs)


_RANDOM_FILLS = {
    torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.random_, torch.nn.init.normal_, torch.nn.init.uniform_,
    torch.nn.init.trunc_normal_, torch.nn.init.kaiming_uniform_, torch.nn.init.kaiming_normal_,
    torch.nn.init.xavier_uniform_, torch.nn.init.xavier_normal_, torch.nn.init.orthogonal_,
}
_RANDOM_NEW = {torch.randn, torch.rand}


def _weights_file(spec: ModelSpec) -> Path | None:
    """The one file the weights of `spec` are read from, where clipdex can tell which (for the fingerprint cache)."""
    if spec.checkpoint is not None:
        return Path(spec.checkpoint)
    if spec.pretrained is None or spec.name.startswith(SCHEMAS):
        return None
    cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    try:
        # What create_model downloads (or finds in the cache) next; offline and uncached it raises.
        found = open_clip.pretrained.download_pretrained(cfg) if cfg else ""
    except Exception:  # hub and network errors of every kind: create_model words them
        return None
    return Path(found) if found and not str(found).endswith((".npz", ".npy")) else None


_FIX = (
    "connect to the network once, populate the Hugging Face cache (HF_HOME), "
    "or load local weights from a checkpoint file; to try clipdex offline, use the built-in clipdex-tiny model"
)


def _create_pretrained(spec: ModelSpec) -> torch.nn.Module:
    if spec.pretrained and not spec.name.startswith(SCHEMAS):
        tags = open_clip.list_pretrained_tags_by_model(spec.name)
        if spec.pretrained not in tags:
            raise UnknownModel(
                f"{spec.name} has no pretrained tag {spec.pretrained!r}; known tags: {', '.join(tags) or 'none'}"
            )
    try:
        return open_clip.create_model(spec.name, pretrained=spec.pretrained, require_pretrained=True)
    except Exception as e:  # download/cache errors arrive wrapped in RuntimeError and others
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "offline and not in the Hugging Face cache" if offline else f"weights could not be fetched ({_one_line(e)[:200]})"
        raise WeightsUnreachable(spec.label, why) from None


def _fit_shapes(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Reshape scalar-vs-1d logit parameters, which open_clip versions store differently."""
    own = model.state_dict()
    for key in ("logit_scale", "logit_bias"):
        if key in state and key in own and state[key].numel() == own[key].numel():
            state[key] = state[key].reshape(own[key].shape)
    return state


def _embed_dim(model: torch.nn.Module) -> int:
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    if isinstance(proj, torch.nn.Linear):
        return int(proj.out_features)
    visual = getattr(model, "visual", None)
    out = getattr(visual, "output_dim", None)
    if isinstance(out, int):
        return out
    with torch.no_grad():
        tokens = torch.zeros((1, 8), dtype=torch.long)
        return int(model.encode_text(tokens).shape[-1])  # type: ignore[operator]


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


@dataclass(frozen=True)
class ModelListing:
    name: str
    tags: tuple[str, ...]
    source: str = "open_clip"  # open_clip, built-in or saved
    arch: str | None = None  # a model card's architecture


def list_models(home: Path | None = None) -> list[ModelListing]:
    """The built-in models, those saved in the library at `home`, then every open_clip
    architecture with its pretrained tags. Raises SavedModelError for an unreadable card."""
    register_builtin_models()
    cards = list_cards(home)
    listing = [ModelListing(c.name, (), "built-in" if c.is_builtin else "saved", c.arch) for c in cards]
    tags: dict[str, list[str]] = {}
    for name, tag in open_clip.list_pretrained():
        tags.setdefault(name, []).append(tag)
    named = {c.name for c in cards}
    return listing + [ModelListing(n, tuple(tags.get(n, ()))) for n in open_clip.list_models() if n not in named]
