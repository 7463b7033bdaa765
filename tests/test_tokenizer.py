"""The torch-free tokenizer gives exactly open_clip's token ids."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest

from indexer.model_store import register_builtin_models
from indexer.tokenizer import (
    CLIP_BPE,
    OPEN_CLIP_VOCAB,
    TokenizerRecipe,
    TokenizerUnavailable,
    load_tokenizer,
    open_clip_vocab_path,
    recipe_of,
)

# Unicode, emoji, HTML entities, mojibake, mixed case, punctuation, digits, contractions,
# whitespace runs, control characters, the special tokens themselves, and texts past 77 tokens.
CAPTIONS = [
    "",
    " ",
    "a photo of a cat",
    "A PHOTO OF A CAT",
    "a Photo Of a cAt on the MAT",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed",
    "dog's ball, the cat's toy; they're happy! we'll see, I'd say, I've done, I'm here",
    "Hello, world!!! ... ??? --- ;;; :::",
    "#sunset @beach $100 50% off & more *stars* (parens) [brackets] {braces}",
    "the year 2024, 3.14159 and 1,000,000 photos",
    "café naïve résumé façade jalapeño",
    "Straße in München, Ökologie",
    "東京の夜景",
    "北京 天安门",
    "서울의 거리",
    "Москва зимой",
    "Αθήνα και ο Παρθενώνας",
    "القاهرة في الليل",
    "नमस्ते भारत",
    "🐶🐱 dog and cat 🎉",
    "👨‍👩‍👧‍👦 family emoji with zero-width joiners",
    "🏳️‍🌈 flag and 🇫🇷 regional indicators",
    "fish &amp; chips",
    "&lt;b&gt;bold&lt;/b&gt; tags",
    "&amp;amp;amp; triple escaped",
    "&#39;quoted&#39; and &quot;double&quot;",
    "<b>real html</b> <i>tags</i>",
    "mojibake: Ã©tÃ© and â€œquotesâ€\x9d",
    "curly “quotes” and ‘single’ — em dash – en dash …",
    "ﬁne ligature ﬂower",
    "full-width ＡＢＣ１２３",
    "zero\u200bwidth space and\u00a0nbsp",
    "control\x07bell and \x00 null",
    "<start_of_text> inside <end_of_text> text",
    "underscores_in_file_names_like_IMG_1234",
    "CamelCaseWordsTogether and snake_case",
    "https://example.com/path?q=1&x=2",
    "email@example.com",
    "C++ and C# and F#",
    "x" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    " ".join(["word"] * 100),
    " ".join(f"token{i}" for i in range(80)),
    "a " * 75 + "end",
    "a " * 74 + "end",
    "🙂" * 40,
    "Ünïcödé ÜBER alles",
    "ß ẞ ﬀ İstanbul ı",
    "tab\tsep\tvalues",
]


def _open_clip_ids(name: str, texts: list[str]) -> np.ndarray:
    return open_clip.get_tokenizer(name)(texts).numpy()


@pytest.mark.parametrize("name", ["clipdex-tiny", "ViT-B-32", "ViT-B-32-256"])
def test_clip_bpe_ids_equal_open_clip(name: str) -> None:
    register_builtin_models()
    made = recipe_of(open_clip.get_tokenizer(name))
    assert made.recipe.family == CLIP_BPE and made.files == {}
    ours = load_tokenizer(TokenizerRecipe.from_json(json.loads(json.dumps(made.recipe.to_json()))))
    expected = _open_clip_ids(name, CAPTIONS)
    got = ours(CAPTIONS)
    assert got.dtype == np.int64 and got.shape == expected.shape
    mismatched = [CAPTIONS[i] for i in range(len(CAPTIONS)) if not np.array_equal(got[i], expected[i])]
    assert mismatched == []


def test_recipe_of_tiny() -> None:
    register_builtin_models()
    vocab = open_clip_vocab_path()
    assert vocab is not None and vocab.is_file()
    recipe = recipe_of(open_clip.get_tokenizer("clipdex-tiny")).recipe
    assert (recipe.family, recipe.context_length, recipe.clean, recipe.vocab, recipe.special_tokens) == (
        CLIP_BPE, 24, "lower", OPEN_CLIP_VOCAB, ()
    )


@pytest.mark.parametrize("clean", ["whitespace", "canonicalize"])
def test_clip_bpe_cleaning_options(clean: str) -> None:
    reference = open_clip.tokenizer.SimpleTokenizer(context_length=40, clean=clean)
    recipe = recipe_of(reference).recipe
    assert recipe.clean == clean
    assert np.array_equal(load_tokenizer(recipe)(CAPTIONS), reference(CAPTIONS).numpy())


def test_additional_special_tokens() -> None:
    reference = open_clip.tokenizer.SimpleTokenizer(additional_special_tokens=["<mask>"])
    recipe = recipe_of(reference).recipe
    assert recipe.special_tokens == ("<mask>",)
    texts = ["a <mask> on the beach", "<mask>"]
    assert np.array_equal(load_tokenizer(recipe)(texts), reference(texts).numpy())


def test_reduction_mask_is_refused() -> None:
    with pytest.raises(TokenizerUnavailable, match="reduction mask"):
        recipe_of(open_clip.tokenizer.SimpleTokenizer(reduction_mask="simple"))


def test_another_vocab_file_is_refused(tmp_path: Path) -> None:
    recipe = recipe_of(open_clip.get_tokenizer("ViT-B-32")).recipe
    wrong = TokenizerRecipe(**{**recipe.__dict__, "vocab_sha256": "0" * 64})
    with pytest.raises(TokenizerUnavailable, match="merges file"):
        load_tokenizer(wrong)
    missing = TokenizerRecipe(**{**recipe.__dict__, "vocab": str(tmp_path / "nope.txt.gz")})
    with pytest.raises(TokenizerUnavailable, match="merges file"):
        load_tokenizer(missing)


def test_unknown_family_is_refused() -> None:
    with pytest.raises(TokenizerUnavailable, match="family"):
        TokenizerRecipe.from_json({"family": "sentencepiece", "context_length": 64, "clean": "lower"})


def test_tokenizing_imports_neither_torch_nor_open_clip() -> None:
    recipe = recipe_of(open_clip.get_tokenizer("ViT-B-32")).recipe
    code = (
        "import json, sys\n"
        "from indexer.tokenizer import TokenizerRecipe, load_tokenizer\n"
        f"tok = load_tokenizer(TokenizerRecipe.from_json(json.loads({json.dumps(json.dumps(recipe.to_json()))})))\n"
        "print(json.dumps([tok(['a photo of a cat']).tolist()[0][:6], 'torch' in sys.modules, 'open_clip' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    expected = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat"])[0, :6].tolist()
    assert json.loads(out.stdout) == [expected, False, False]


def _local_hf_tokenizer(folder: Path) -> Path:
    """A small BERT-style WordPiece tokenizer saved as a Hugging Face folder: no hub access needed."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CAPTIONS * 3, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512}
    config.update(pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]", mask_token="[MASK]")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "options",
    [
        {"clean": "whitespace", "strip_sep_token": True},
        {"clean": "lower", "strip_sep_token": False, "padding_side": "left"},
        {"clean": "canonicalize", "strip_sep_token": False, "truncation_side": "left"},
    ],
)
def test_hf_ids_equal_open_clip(tmp_path: Path, options: dict[str, object]) -> None:
    """open_clip's HFTokenizer (transformers) on a local folder; hub tokenizers (SigLIP, XLM-R) need the network."""
    pytest.importorskip("transformers")
    reference = open_clip.tokenizer.HFTokenizer(str(_local_hf_tokenizer(tmp_path / "hf")), context_length=16, **options)
    made = recipe_of(reference)
    assert made.recipe.family == "hf" and list(made.files) == ["tokenizer.json"]
    export = tmp_path / "export"
    export.mkdir()
    (export / "text-encoder.tokenizer.json").write_bytes(made.files["tokenizer.json"])
    ours = load_tokenizer(TokenizerRecipe.from_json(made.recipe.to_json()), export, "text-encoder.")
    expected = reference(CAPTIONS).numpy()
    got = ours(CAPTIONS)
    assert got.shape == expected.shape == (len(CAPTIONS), 16)
    assert [CAPTIONS[i] for i in range(len(CAPTIONS)) if not np.array_equal(got[i], expected[i])] == []


def test_a_missing_hf_tokenizer_file_is_unavailable(tmp_path: Path) -> None:
    recipe = TokenizerRecipe.from_json({"family": "hf", "context_length": 16, "clean": "whitespace"})
    with pytest.raises(TokenizerUnavailable, match="cannot read the tokenizer"):
        load_tokenizer(recipe, tmp_path, "text-encoder.")
