"""Text to token ids without torch or open_clip: exactly the ids open_clip's tokenizers give.

Two families cover open_clip's tokenizers:

- `clip-bpe`: open_clip's own `SimpleTokenizer` (OpenAI CLIP's byte-level BPE; ViT-B-32,
  clipdex-tiny and most models). The merges file is the one open_clip ships,
  found with `importlib.util.find_spec` (which does not import open_clip: its
  tokenizer module imports torch) and checked against the SHA-256 recorded at export.
- `hf`: open_clip's `HFTokenizer` and `SigLipTokenizer`, which wrap a Hugging Face fast
  tokenizer; its `tokenizer.json` is saved beside the export and read with the
  `tokenizers` package (torch-free).

A `TokenizerRecipe` (saved in an export's tag) says which family and every option
that changes the ids. `recipe_of` makes one from a loaded open_clip tokenizer (the
torch side); `load_tokenizer` turns it back into a callable (the search side).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.util
import re
import string
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from indexer.errors import ClipdexError

CLIP_BPE = "clip-bpe"
HF = "hf"
OPEN_CLIP_VOCAB = "open_clip:bpe_simple_vocab_16e6.txt.gz"  # the merges file open_clip ships
HF_TOKENIZER_FILE = "tokenizer.json"  # the companion file an `hf` recipe reads
_CLEANS = ("lower", "whitespace", "canonicalize")


class TokenizerUnavailable(ClipdexError):
    """A model's tokenizer cannot be reproduced without open_clip (unsupported family or options, missing file)."""


@dataclass(frozen=True)
class TokenizerRecipe:
    """Everything that decides the token ids of a model's tokenizer."""

    family: str  # clip-bpe | hf
    context_length: int
    clean: str  # lower | whitespace | canonicalize: open_clip's text cleaning before tokenizing
    vocab: str = ""  # clip-bpe: OPEN_CLIP_VOCAB or an absolute path of a merges file
    vocab_sha256: str = ""  # clip-bpe: of that file
    special_tokens: tuple[str, ...] = ()  # clip-bpe: added after <start_of_text>, <end_of_text>
    pad_id: int = 0  # hf
    pad_token: str = ""  # hf
    padding_side: str = "right"  # hf
    truncation_side: str = "right"  # hf
    strip_sep_id: int | None = None  # hf: this id becomes 0 (open_clip's strip_sep_token)

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["special_tokens"] = list(self.special_tokens)
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TokenizerRecipe:
        """Raises TokenizerUnavailable for a recipe this version does not know."""
        try:
            recipe = cls(**{**raw, "special_tokens": tuple(raw.get("special_tokens", ()))})
        except TypeError as e:
            raise TokenizerUnavailable(f"unreadable tokenizer recipe: {e}") from None
        if recipe.family not in (CLIP_BPE, HF) or recipe.clean not in _CLEANS:
            raise TokenizerUnavailable(f"unknown tokenizer family {recipe.family!r} or cleaning {recipe.clean!r}")
        return recipe


Tokenize = Callable[[Sequence[str]], np.ndarray]  # texts → (B, context_length) int64 ids


def load_tokenizer(recipe: TokenizerRecipe, folder: Path | None = None, prefix: str = "") -> Tokenize:
    """A tokenizer that gives open_clip's ids. An `hf` recipe reads `folder/<prefix>tokenizer.json`.

    Raises TokenizerUnavailable when a file is missing or is not the one recorded.
    """
    if recipe.family == CLIP_BPE:
        return _ClipBpe(recipe)
    if folder is None:
        raise TokenizerUnavailable("an hf tokenizer needs the folder of its tokenizer.json")
    return _HfTokenizer(recipe, folder / (prefix + HF_TOKENIZER_FILE))


# --- clip-bpe: a port of open_clip/tokenizer.py (MIT, from OpenAI CLIP), numpy instead of torch ---


class _ClipBpe:
    def __init__(self, recipe: TokenizerRecipe) -> None:
        import regex

        self.context_length = recipe.context_length
        self.clean = _clean_fn(recipe.clean)
        self.encoder, self.bpe_ranks = _vocab(_vocab_path(recipe), recipe.special_tokens)
        specials = ["<start_of_text>", "<end_of_text>", *recipe.special_tokens]
        self.sot, self.eot = self.encoder[specials[0]], self.encoder[specials[1]]
        self.cache: dict[str, str] = {t: t for t in specials}
        self.pat = regex.compile(
            "|".join(specials) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
        )
        self.byte_encoder = _bytes_to_unicode()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)  # (B, L)
        for i, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            out[i, : len(ids)] = ids
        return out

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for token in self.pat.findall(self.clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word: tuple[str, ...] = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        inf = float("inf")
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(f"{pair[0]} {pair[1]}", inf))
            if f"{bigram[0]} {bigram[1]}" not in self.bpe_ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        joined = " ".join(word)
        self.cache[token] = joined
        return joined


def open_clip_vocab_path() -> Path | None:
    """open_clip's merges file, located without importing open_clip (None if it is not installed)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / OPEN_CLIP_VOCAB.split(":", 1)[1]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _vocab_path(recipe: TokenizerRecipe) -> Path:
    path = open_clip_vocab_path() if recipe.vocab == OPEN_CLIP_VOCAB else Path(recipe.vocab)
    try:
        if path is not None and file_sha256(path) == recipe.vocab_sha256:
            return path
    except OSError:
        pass
    raise TokenizerUnavailable(f"the BPE merges file {recipe.vocab} is missing or not the one the export was made with")


@lru_cache(maxsize=4)
def _vocab(path: Path, special_tokens: tuple[str, ...]) -> tuple[dict[str, int], dict[str, int]]:
    """(token → id, "FIRST SECOND" merge → rank). A merge is keyed by its line, one string rather than a
    tuple of two (tokens hold no spaces): ~5 MB less in a cold search's peak."""
    # Split off only the merges used (49k of 262k lines): the rest as one string, not 200k of them (-16 MB peak).
    lines = gzip.open(path).read().decode("utf-8").split("\n", 49152 - 256 - 2 + 1)
    merges = [" ".join(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    del lines
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + [m.replace(" ", "") for m in merges]
    vocab.extend(["<start_of_text>", "<end_of_text>", *special_tokens])
    ranks = {m: i for i, m in enumerate(merges)}
    return dict(zip(vocab, range(len(vocab)))), ranks


@lru_cache()
def _bytes_to_unicode() -> dict[int, str]:
    """Byte → printable character, as GPT-2 and CLIP map them (no whitespace or control characters)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(zip(word, word[1:]))


# --- text cleaning, as open_clip's get_clean_fn ---


def _clean_fn(kind: str) -> Callable[[str], str]:
    return {"lower": _clean_lower, "whitespace": _clean_whitespace, "canonicalize": _clean_canonicalize}[kind]


def _basic_clean(text: str) -> str:
    if _PLAIN_ASCII.fullmatch(text):
        return text.strip()  # what ftfy and html.unescape give back unchanged: skip importing ftfy (~9 MB, ~0.1 s)
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


# Printable ASCII without `&`: no mojibake, curly quotes, ligatures, control or escape
# characters, or HTML entities, which is all that ftfy.fix_text and html.unescape change.
_PLAIN_ASCII = re.compile(r"[ -%'-~]*")


def _whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


def _clean_lower(text: str) -> str:
    return _whitespace_clean(_basic_clean(text)).lower()


def _clean_whitespace(text: str) -> str:
    return _whitespace_clean(_basic_clean(text))


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _clean_canonicalize(text: str) -> str:
    text = _basic_clean(text).replace("_", " ").translate(_NO_PUNCTUATION).lower()
    return " ".join(text.split()).strip()


# --- hf: a Hugging Face fast tokenizer, padded and truncated as transformers does for open_clip ---


class _HfTokenizer:
    def __init__(self, recipe: TokenizerRecipe, path: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise TokenizerUnavailable("an hf tokenizer needs the tokenizers package: pip install tokenizers") from None
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for unreadable files
            raise TokenizerUnavailable(f"cannot read the tokenizer {path}: {e}") from None
        tok.enable_truncation(max_length=recipe.context_length, direction=recipe.truncation_side)
        tok.enable_padding(
            direction=recipe.padding_side, pad_id=recipe.pad_id, pad_token=recipe.pad_token, length=recipe.context_length
        )
        self.tok = tok
        self.recipe = recipe
        self.clean = _clean_fn(recipe.clean)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.recipe.context_length), dtype=np.int64)
        encoded = self.tok.encode_batch([self.clean(t) for t in texts])
        out = np.array([e.ids for e in encoded], dtype=np.int64)  # (B, L)
        if self.recipe.strip_sep_id is not None:
            out[out == self.recipe.strip_sep_id] = 0
        return out


# --- the torch side: a recipe from a loaded open_clip tokenizer ---


@dataclass(frozen=True)
class RecipeFiles:
    """A recipe, and the companion files (name → content) it reads."""

    recipe: TokenizerRecipe
    files: dict[str, bytes] = field(default_factory=dict)


def recipe_of(tokenizer: object) -> RecipeFiles:
    """The recipe that reproduces a loaded open_clip tokenizer; raises TokenizerUnavailable if none can."""
    from open_clip import tokenizer as oc  # only where open_clip is loaded already

    context_length = getattr(tokenizer, "context_length", None)
    if not isinstance(context_length, int):
        raise TokenizerUnavailable(f"{type(tokenizer).__name__} has no fixed context length")
    if type(tokenizer) is oc.SimpleTokenizer:
        return RecipeFiles(_clip_bpe_recipe(tokenizer, context_length, oc))
    if type(tokenizer) in (oc.HFTokenizer, oc.SigLipTokenizer):
        return _hf_recipe(tokenizer, context_length, oc)
    raise TokenizerUnavailable(f"open_clip tokenizer {type(tokenizer).__name__} is not supported without torch")


def _clip_bpe_recipe(tok: Any, context_length: int, oc: Any) -> TokenizerRecipe:
    if tok.reduction_fn is not None:
        raise TokenizerUnavailable("a tokenizer with a reduction mask (random token dropping) is not supported")
    clean = _clean_name(tok.clean_fn, oc)
    specials = [tok.decoder[i] for i in tok.all_special_ids[2:]]  # after <start_of_text>, <end_of_text>
    path = Path(oc.default_bpe())  # SimpleTokenizer keeps no path: check it holds the default file's vocabulary
    default = _vocab(path, tuple(specials))[0]
    if default != tok.encoder:
        raise TokenizerUnavailable("a SimpleTokenizer with its own merges file is not supported")
    return TokenizerRecipe(CLIP_BPE, context_length, clean, OPEN_CLIP_VOCAB, file_sha256(path), tuple(specials))


def _hf_recipe(tok: Any, context_length: int, oc: Any) -> RecipeFiles:
    if getattr(tok, "tokenizer_mode", "") not in ("", None):
        raise TokenizerUnavailable(f"HFTokenizer mode {tok.tokenizer_mode!r} is not supported")
    hf = tok.tokenizer
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerUnavailable(f"{type(hf).__name__} is not a fast (tokenizers) tokenizer")
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(backend.to_str())
    plain.no_padding()
    plain.no_truncation()
    is_siglip = type(tok) is oc.SigLipTokenizer
    strip = hf.sep_token_id if getattr(tok, "strip_sep_token", False) else None
    recipe = TokenizerRecipe(
        HF,
        context_length,
        "canonicalize" if is_siglip else _clean_name(tok.clean_fn, oc),
        pad_id=int(hf.pad_token_id),
        pad_token=str(hf.pad_token) if hf.pad_token is not None else "",
        padding_side=str(hf.padding_side),
        truncation_side=str(hf.truncation_side),
        strip_sep_id=int(strip) if strip is not None else None,
    )
    return RecipeFiles(recipe, {HF_TOKENIZER_FILE: plain.to_str().encode()})


def _clean_name(fn: Any, oc: Any) -> str:
    for name in _CLEANS:
        if fn is oc.get_clean_fn(name):
            return name
    raise TokenizerUnavailable(f"unknown open_clip text cleaning {getattr(fn, '__name__', fn)!r}")
