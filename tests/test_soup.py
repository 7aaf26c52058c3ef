"""SALSA soups: equal to a plain fp64 average, loadable by transformers, reused, refused cleanly."""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from openrlhf_pilaf.soup import SoupConfig, SoupError, build_soup, read_record
from openrlhf_pilaf.soup import builder as soup_builder
from openrlhf_pilaf.soup import record as soup_record
from openrlhf_pilaf.testing import TinyLlamaSpec
from openrlhf_pilaf.testing.tiny_models import build_causal_lm, build_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
IDS = torch.tensor([[1, 7, 42, 99, 250, 3, 17, 8]])


# ---------------------------------------------------------------------------------------- helpers
def _state(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, sharded or not, safetensors or pickle."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        out = {}
        for f in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            out.update(load_file(str(path / f)))
        return out
    if (path / "model.safetensors").exists():
        return load_file(str(path / "model.safetensors"))
    return torch.load(path / "pytorch_model.bin", weights_only=True)


def _fp64_average(paths, weights) -> dict[str, torch.Tensor]:
    """The straightforward computation the soup must equal: whole state dicts, fp64, normalised."""
    states = [_state(p) for p in paths]
    return {k: sum(w * s[k].double() for w, s in zip(weights, states, strict=True)) for k in states[0]}


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def _assert_logits_close(model, reference) -> None:
    """Equal up to fp32 noise: the soup holds each weight to within one fp32 step of the fp64
    average, and the tiny models' large init amplifies that to ~1e-6 of the logits' scale."""
    got, want = _logits(model), _logits(reference)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * want.abs().max().item())


def _model_with_state(config_dir: Path, state: dict[str, torch.Tensor]):
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir)).float()
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing)  # lm_head absent only when tied
    if model.config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _assert_nothing_left(out: Path) -> None:
    assert not out.exists(), f"{out} must not exist after a refused build"
    assert not list(out.parent.glob(f".{out.name}.soup-tmp-*")), "temporary build directory left behind"


def _clone(src: Path, dst: Path, edit_state=None, edit_config=None, as_pickle: bool = False) -> Path:
    """A copy of a checkpoint with its tensors or config changed: inputs for the refusal tests."""
    shutil.copytree(src, dst)
    state = _state(dst)
    if edit_state is not None:
        edit_state(state)
    if edit_config is not None:
        config = json.loads((dst / "config.json").read_text())
        edit_config(config)
        (dst / "config.json").write_text(json.dumps(config))
    (dst / "model.safetensors").unlink()
    if as_pickle:
        torch.save(state, dst / "pytorch_model.bin")
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(dst / "model.safetensors"), {"format": "pt"})
    return dst


def _cfg(ingredients, output, **kw) -> SoupConfig:
    return SoupConfig(ingredients=[str(p) for p in ingredients], output=str(output), **kw)


# --------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_suite):
    """Tiny Llamas: an fp32 trio of one tokenizer, bf16 and tied pairs, and odd ones out."""
    root = tmp_path_factory.mktemp("soup-models")
    tok = build_tokenizer(seed=0)
    bf16 = [root / f"bf16-{s}" for s in (10, 11)]
    for p, s in zip(bf16, (10, 11), strict=True):
        build_causal_lm(p, tok, s, dtype="bfloat16")
    tied = [root / f"tied-{s}" for s in (20, 21)]
    for p, s in zip(tied, (20, 21), strict=True):
        build_causal_lm(p, tok, s, TinyLlamaSpec(tie_word_embeddings=True))
    build_causal_lm(root / "narrow", tok, 30, TinyLlamaSpec(hidden_size=64, num_attention_heads=2))
    build_causal_lm(root / "deep", tok, 31, TinyLlamaSpec(num_hidden_layers=3))
    build_causal_lm(root / "other-tokenizer", build_tokenizer(seed=1), 32)
    return {
        "fp32": list(tiny_suite.causal_lms),
        "bf16": bf16,
        "tied": tied,
        "narrow": root / "narrow",
        "deep": root / "deep",
        "other_tokenizer": root / "other-tokenizer",
    }


# ------------------------------------------------------------------------------------- semantics
@pytest.mark.parametrize(("k", "weights"), [(2, None), (3, [1.0, 2.0, 3.0])], ids=["2-uniform", "3-weighted"])
def test_soup_equals_fp64_average_and_loads(models, tmp_path, k, weights):
    paths = models["fp32"][:k]
    out = build_soup(_cfg(paths, tmp_path / "soup", weights=weights), progress=False)
    coeffs = [1 / k] * k if weights is None else [w / sum(weights) for w in weights]
    ref = _fp64_average(paths, coeffs)
    soup = _state(out)
    assert soup.keys() == ref.keys()
    for name, t in soup.items():
        assert t.dtype == torch.float32, name
        torch.testing.assert_close(t.double(), ref[name], rtol=1e-6, atol=1e-7, msg=name)
    # Every parameter moved away from each ingredient (the soup is not a copy of one of them).
    first = _state(paths[0])
    assert all(not torch.equal(soup[n], first[n]) for n in soup if "norm" not in n)
    _assert_logits_close(_load(out), _model_with_state(paths[0], ref))
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (paths[0] / name).read_bytes()
    record = read_record(out)
    assert [i["weight"] for i in record["ingredients"]] == pytest.approx(coeffs)
    assert [i["path"] for i in record["ingredients"]] == [str(p.resolve()) for p in paths]
    st = record["ingredients"][0]["files"]["model.safetensors"]
    assert st["sha256"] == soup_record.sha256_file(paths[0] / "model.safetensors")
    assert record["output_dtypes"] == ["float32"] and record["openrlhf_pilaf_version"]


def test_no_normalize_and_negative_weights_extrapolate(models, tmp_path):
    a, b = models["fp32"][:2]
    out = build_soup(_cfg([a, b], tmp_path / "x", weights=[1.5, -0.25], allow_negative=True, no_normalize=True))
    ref = _fp64_average([a, b], [1.5, -0.25])
    for name, t in _state(out).items():
        torch.testing.assert_close(t.double(), ref[name], rtol=1e-6, atol=1e-6, msg=name)


def test_bf16_ingredients_give_a_bf16_soup(models, tmp_path):
    paths = models["bf16"]
    out = build_soup(_cfg(paths, tmp_path / "soup"), progress=False)
    ref = _fp64_average(paths, [0.5, 0.5])
    for name, t in _state(out).items():
        assert t.dtype == torch.bfloat16, name
        # fp32 accumulation then one rounding: at most one bf16 step from the exact average.
        torch.testing.assert_close(t.double(), ref[name], rtol=2**-8, atol=1e-30, msg=name)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert read_record(out)["output_dtypes"] == ["bfloat16"]


def test_dtype_fp32_upcasts_bf16_ingredients(models, tmp_path):
    paths = models["bf16"]
    out = build_soup(_cfg(paths, tmp_path / "soup", dtype="fp32"), progress=False)
    ref = _fp64_average(paths, [0.5, 0.5])
    for name, t in _state(out).items():
        assert t.dtype == torch.float32, name
        torch.testing.assert_close(t.double(), ref[name], rtol=1e-7, atol=1e-30, msg=name)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    assert _load(out).dtype == torch.float32


def test_uniform_average_rounds_exact_ties_to_even(models, tmp_path):
    """(a + b + c) / 3 of bf16 values can fall exactly between two bf16 values; dividing once at
    the end (not multiplying by a rounded 1/3) rounds it half-to-even, as mergekit does."""
    values = (0.00665283203125, 0.0037384033203125, -0.00057220458984375)  # mean = 3432 * 2**-20, a tie

    def setter(v):
        return lambda s: s.__setitem__("model.norm.weight", torch.full_like(s["model.norm.weight"], v))

    paths = [_clone(models["bf16"][0], tmp_path / f"i{i}", edit_state=setter(v)) for i, v in enumerate(values)]
    out = build_soup(_cfg(paths, tmp_path / "soup"), progress=False)
    norm = _state(out)["model.norm.weight"]
    assert sum(values) / 3 == 3432 * 2**-20
    assert torch.all(norm == 3424 * 2**-20)  # the even neighbour (3440 * 2**-20 is the odd one)


def test_mixed_dtypes_need_an_explicit_dtype(models, tmp_path):
    out = tmp_path / "soup"
    with pytest.raises(SoupError, match=r"different dtypes.*--soup\.dtype"):
        build_soup(_cfg([models["fp32"][0], models["bf16"][0]], out))
    _assert_nothing_left(out)
    build_soup(_cfg([models["fp32"][0], models["bf16"][0]], out, dtype="bf16"), progress=False)
    assert {t.dtype for t in _state(out).values()} == {torch.bfloat16}


def test_sharded_output_has_an_index_and_loads(models, tmp_path):
    paths = models["fp32"]
    single = build_soup(_cfg(paths, tmp_path / "single"), progress=False)
    out = build_soup(_cfg(paths, tmp_path / "sharded", max_shard_size="100KB"), progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and not (out / "model.safetensors").exists()
    assert shards == sorted(p.name for p in out.glob("model-*-of-*.safetensors"))
    state = _state(out)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    for shard in shards:  # every shard is under the limit unless it holds one oversized tensor
        tensors = load_file(str(out / shard))
        assert len(tensors) == 1 or sum(t.numel() * 4 for t in tensors.values()) <= 100_000
    reference = _state(single)
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    torch.testing.assert_close(_logits(_load(out)), _logits(_load(single)), rtol=0, atol=0)


def test_tied_embeddings_stay_tied(models, tmp_path):
    paths = models["tied"]
    assert "lm_head.weight" not in _state(paths[0])
    out = build_soup(_cfg(paths, tmp_path / "soup", weights=[0.3, 0.7]), progress=False)
    soup = _state(out)
    assert "lm_head.weight" not in soup
    model = _load(out)
    assert model.config.tie_word_embeddings
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    ref = _fp64_average(paths, [0.3, 0.7])
    _assert_logits_close(model, _model_with_state(paths[0], ref))


def test_tied_and_untied_ingredients_are_refused(models, tmp_path):
    out = tmp_path / "soup"
    with pytest.raises(SoupError, match="tie_word_embeddings"):
        build_soup(_cfg([models["fp32"][0], models["tied"][0]], out))
    _assert_nothing_left(out)


def test_pickle_ingredients_need_allow_pickle(models, tmp_path):
    a = _clone(models["fp32"][0], tmp_path / "a-bin", as_pickle=True)
    b = models["fp32"][1]
    out = tmp_path / "soup"
    with pytest.raises(SoupError, match=r"ingredient 1 .*pickled.*--soup\.allow_pickle"):
        build_soup(_cfg([a, b], out))
    _assert_nothing_left(out)
    build_soup(_cfg([a, b], out, allow_pickle=True), progress=False)
    safe = build_soup(_cfg(models["fp32"][:2], tmp_path / "safe"), progress=False)
    got, want = _state(out), _state(safe)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert read_record(out)["ingredients"][0]["format"] == "pickle"


# ----------------------------------------------------------------------------------------- reuse
def test_rerun_reuses_the_soup_without_rehashing(models, tmp_path, caplog, monkeypatch):
    paths = models["fp32"]
    out = build_soup(_cfg(paths, tmp_path / "soup"), progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    def no_hashing(*args, **kwargs):
        raise AssertionError("unchanged ingredients must not be re-hashed")

    monkeypatch.setattr(soup_record, "sha256_file", no_hashing)
    with caplog.at_level(logging.INFO, logger="openrlhf_pilaf.soup"):
        # Equal weights given explicitly are the same recipe as the default.
        assert build_soup(_cfg(paths, out, weights=[2, 2, 2])) == out
    assert "reusing the soup" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    assert not list(tmp_path.glob(".soup.soup-tmp-*"))


def test_rerun_rehashes_a_touched_ingredient_and_still_reuses(models, tmp_path, caplog):
    a = shutil.copytree(models["fp32"][0], tmp_path / "a")
    out = build_soup(_cfg([a, models["fp32"][1]], tmp_path / "soup"), progress=False)
    before = (out / "model.safetensors").stat().st_mtime_ns
    weights = a / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same content, new mtime: must be hashed again
    with caplog.at_level(logging.INFO, logger="openrlhf_pilaf.soup"):
        build_soup(_cfg([a, models["fp32"][1]], out))
    assert "reusing the soup" in caplog.text
    assert (out / "model.safetensors").stat().st_mtime_ns == before


def test_changed_ingredient_content_is_not_reused(models, tmp_path):
    a = shutil.copytree(models["fp32"][0], tmp_path / "a")
    out = build_soup(_cfg([a, models["fp32"][1]], tmp_path / "soup"), progress=False)
    record_before = (out / "soup.json").read_text()
    state = _state(a)
    state["model.norm.weight"] = state["model.norm.weight"] + 1
    save_file(state, str(a / "model.safetensors"), {"format": "pt"})
    with pytest.raises(SoupError, match=r"other inputs .*ingredient 1's files \['model.safetensors'\]"):
        build_soup(_cfg([a, models["fp32"][1]], out))
    assert (out / "soup.json").read_text() == record_before


def test_empty_output_directory_is_filled(models, tmp_path):
    out = tmp_path / "soup"
    out.mkdir()
    build_soup(_cfg(models["fp32"][:2], out), progress=False)
    assert (out / "model.safetensors").is_file() and read_record(out) is not None


# -------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": [1.0, 2.0]}, r"--soup\.weights: 2 weights for 3 ingredients"),
        ({"weights": [1.0, -1.0, 1.0]}, r"weight -1\.0 of ingredient 2 .*negative.*--soup\.allow_negative"),
        ({"weights": [1.0, -1.0, 0.0], "allow_negative": True}, "sum to zero"),
        ({"weights": [1.0, -3.0, 1.0], "allow_negative": True}, r"sum to -1\.0 < 0"),
        ({"weights": [1.0, math.nan, 1.0]}, "ingredient 2 .* not finite"),
        ({"weights": [1.0, math.inf, 1.0]}, "ingredient 2 .* not finite"),
        ({"dtype": "int8"}, r"--soup\.dtype: 'int8' is not one of"),
        ({"max_shard_size": "lots"}, r"--soup\.max_shard_size"),
    ],
)
def test_bad_weights_and_flags_are_refused(models, tmp_path, kwargs, match):
    out = tmp_path / "soup"
    with pytest.raises(SoupError, match=match):
        build_soup(_cfg(models["fp32"], out, **kwargs))
    _assert_nothing_left(out)


def test_one_ingredient_and_overlapping_output_are_refused(models, tmp_path):
    with pytest.raises(SoupError, match="at least 2 ingredients"):
        _cfg(models["fp32"][:1], tmp_path / "soup")
    with pytest.raises(SoupError, match=r"--soup\.output: .* overlaps ingredient 2"):
        _cfg(models["fp32"][:2], models["fp32"][1] / "soup")


@pytest.mark.parametrize(
    ("odd_one", "match"),
    [
        ("narrow", r"ingredient 2 .*architecture differs.*hidden_size=64 \(ingredient 1: 128\)"),
        ("deep", r"ingredient 2 .*num_hidden_layers=3 \(ingredient 1: 2\)"),
        ("other_tokenizer", r"ingredient 2 .*tokenizer differs.*token .* has id"),
    ],
)
def test_incompatible_ingredients_are_refused(models, tmp_path, odd_one, match):
    out = tmp_path / "soup"
    with pytest.raises(SoupError, match=match):
        build_soup(_cfg([models["fp32"][0], models[odd_one]], out))
    _assert_nothing_left(out)


def test_different_tensor_names_or_shapes_are_refused(models, tmp_path):
    a = models["fp32"][0]
    missing = _clone(a, tmp_path / "missing", edit_state=lambda s: s.pop("model.layers.1.mlp.up_proj.weight"))
    out = tmp_path / "soup"
    with pytest.raises(SoupError, match=r"ingredient 2 .*lacks 1 tensor.*model\.layers\.1\.mlp\.up_proj\.weight"):
        build_soup(_cfg([a, missing], out))
    _assert_nothing_left(out)

    def reshape(s):
        s["model.norm.weight"] = torch.ones(64)

    reshaped = _clone(a, tmp_path / "reshaped", edit_state=reshape)
    with pytest.raises(SoupError, match=r"ingredient 2 .*tensor 'model\.norm\.weight' has shape \[64\].*\[128\]"):
        build_soup(_cfg([a, reshaped], out))
    _assert_nothing_left(out)


def test_nan_in_an_ingredient_is_refused_naming_tensor_and_ingredient(models, tmp_path):
    def poison(s):
        s["model.layers.0.self_attn.k_proj.weight"][3, 5] = math.nan

    a, b = models["fp32"][:2]
    bad = _clone(b, tmp_path / "nan", edit_state=poison)
    out = tmp_path / "soup"
    with pytest.raises(SoupError, match=r"tensor 'model\.layers\.0\.self_attn\.k_proj\.weight'.*ingredient 2 .* has 1"):
        build_soup(_cfg([a, bad], out), progress=False)
    _assert_nothing_left(out)


def test_fp16_overflow_is_refused(models, tmp_path):
    def huge(s):
        s["model.norm.weight"] = torch.full_like(s["model.norm.weight"], 1e6)

    a, b = (_clone(p, tmp_path / f"huge{i}", edit_state=huge) for i, p in enumerate(models["fp32"][:2]))
    out = tmp_path / "soup"
    with pytest.raises(SoupError, match=r"tensor 'model\.norm\.weight'.*beyond the range of float16"):
        build_soup(_cfg([a, b], out, dtype="fp16"), progress=False)
    _assert_nothing_left(out)


def test_quantized_and_non_checkpoint_directories_are_refused(models, tmp_path):
    a = models["fp32"][0]
    quantized = _clone(a, tmp_path / "q", edit_config=lambda c: c.update(quantization_config={"quant_method": "fp8"}))
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "soup"
    for other, match in [(quantized, "quantized"), (empty, "no config.json"), (tmp_path / "nope", "not a directory")]:
        with pytest.raises(SoupError, match=match):
            build_soup(_cfg([a, other], out))
        _assert_nothing_left(out)


def test_occupied_output_is_left_untouched(models, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(SoupError, match=r"--soup\.output: .* is not a soup"):
        build_soup(_cfg(models["fp32"][:2], occupied))
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]

    other = build_soup(_cfg(models["fp32"][:2], tmp_path / "other"), progress=False)
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    with pytest.raises(SoupError, match=r"holds a soup of other inputs \(its weights are"):
        build_soup(_cfg(models["fp32"][:2], other, weights=[1, 3]))
    with pytest.raises(SoupError, match=r"holds a soup of other inputs \(it has 2 ingredients, not 3\)"):
        build_soup(_cfg(models["fp32"], other))
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before

    (other / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(SoupError, match="damaged soup"):
        build_soup(_cfg(models["fp32"][:2], other))


def test_interrupted_build_leaves_nothing(models, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = soup_builder._Averager._average_chunk

    def interrupt_later(self, *args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(soup_builder._Averager, "_average_chunk", interrupt_later)
    out = tmp_path / "soup"
    with pytest.raises(KeyboardInterrupt):
        build_soup(_cfg(models["fp32"], out, max_shard_size="100KB"), progress=False)
    _assert_nothing_left(out)


def test_small_chunks_give_identical_bytes(models, tmp_path):
    """Chunking is an implementation detail: tiny chunks (many per tensor) change no output byte."""
    whole = build_soup(_cfg(models["fp32"], tmp_path / "whole"), progress=False)
    chunked = build_soup(_cfg(models["fp32"], tmp_path / "chunked"), chunk_elems=1000, progress=False)
    assert (whole / "model.safetensors").read_bytes() == (chunked / "model.safetensors").read_bytes()


# ------------------------------------------------------------------------------------------- CLI
def test_cli_main_accepts_the_short_spellings(models, tmp_path, capsys):
    from openrlhf_pilaf.cli.build_soup import main

    a, b = models["bf16"]
    out = tmp_path / "soup"
    argv = ["--ingredients", str(a), str(b), "--weights", "1", "3", "--output", str(out), "--dtype", "fp32"]
    assert main([*argv, "--no-normalize", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    ref = _fp64_average([a, b], [1.0, 3.0])
    for name, t in _state(out).items():
        torch.testing.assert_close(t.double(), ref[name], rtol=1e-7, atol=1e-30, msg=name)
    assert main([*argv, "--quiet"]) == 2  # normalised weights: another recipe, and the output is taken
    assert "holds a soup of other inputs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--ingredients", str(a), "--output", str(tmp_path / "x")])
    assert exc.value.code == 2 and "at least 2 ingredients" in capsys.readouterr().err


def test_cli_subprocess_end_to_end(models, tmp_path):
    a, b = models["fp32"][:2]
    out = tmp_path / "soup"
    cmd = [sys.executable, "-m", "openrlhf_pilaf.cli.build_soup", "--soup.ingredients", str(a), str(b)]
    cmd += ["--soup.weights", "0.25", "0.75", "--soup.output", str(out), "--soup.max_shard_size", "200KB"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(out.resolve())
    assert "building a soup of 2 ingredients" in run.stderr
    ref = _fp64_average([a, b], [0.25, 0.75])
    for name, t in _state(out).items():
        torch.testing.assert_close(t.double(), ref[name], rtol=1e-6, atol=1e-7, msg=name)
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert again.returncode == 0 and "reusing the soup" in again.stderr


def test_cli_help_lists_dotted_flags_and_aliases():
    from openrlhf_pilaf.cli.build_soup import make_parser

    text = make_parser().format_help()
    for flag in ("--soup.ingredients", "--soup.weights", "--soup.output", "--soup.dtype", "--soup.no_normalize"):
        assert flag in text
    for alias in ("--ingredients", "--weights", "--output", "--dtype", "--no-normalize"):
        assert alias in text
