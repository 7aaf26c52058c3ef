"""Sharded ingredients (`model.safetensors.index.json` + shards, as real checkpoints are stored):
averaged like single files, and refused, naming the file, when index and shards disagree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from openrlhf_pilaf.soup import SoupConfig, SoupError, build_soup, read_record
from tests.test_soup import _assert_nothing_left, _fp64_average, _state

INDEX = "model.safetensors.index.json"


def _save_pretrained_sharded(src: Path, dst: Path, max_shard_size: str) -> Path:
    """The checkpoint at `src`, re-saved by transformers itself in shards (tokenizer files kept)."""
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst)
    (dst / "model.safetensors").unlink()
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.save_pretrained(dst, max_shard_size=max_shard_size)
    return dst


def _write_shards(src: Path, dst: Path, n: int = 3, edit=None) -> Path:
    """`src` split by hand into n shards plus an index; `edit(shards, weight_map)` may break them."""
    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    (dst / "model.safetensors").unlink()
    names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    shards = {name: {} for name in names}
    for i, (key, tensor) in enumerate(sorted(state.items())):
        shards[names[i % n]][key] = tensor
    weight_map = {key: name for name, tensors in shards.items() for key in tensors}
    if edit is not None:
        edit(shards, weight_map)
    for name, tensors in shards.items():
        save_file(tensors, str(dst / name), {"format": "pt"})
    (dst / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tiny_suite):
    root = tmp_path_factory.mktemp("sharded")
    return {
        "policy": _save_pretrained_sharded(tiny_suite.policy, root / "policy", "200KB"),
        "policy_alt": _save_pretrained_sharded(tiny_suite.policy_alt, root / "policy_alt", "300KB"),
    }


def test_two_sharded_ingredients_give_the_weighted_average(sharded, tiny_suite, tmp_path):
    a, b = sharded["policy"], sharded["policy_alt"]
    shards_a = sorted(set(json.loads((a / INDEX).read_text())["weight_map"].values()))
    assert len(shards_a) > 2 and not (a / "model.safetensors").exists()
    out = build_soup(SoupConfig(ingredients=[str(a), str(b)], output=str(tmp_path / "soup"), weights=[1, 3]))
    ref = _fp64_average([a, b], [0.25, 0.75])
    soup = _state(out)
    assert soup.keys() == ref.keys()
    for name, t in soup.items():
        torch.testing.assert_close(t.double(), ref[name], rtol=1e-6, atol=1e-7, msg=name)
    # The shards hold exactly the single-file checkpoints' tensors, so the soup is theirs too.
    single = _fp64_average([tiny_suite.policy, tiny_suite.policy_alt], [0.25, 0.75])
    assert all(torch.allclose(soup[k].double(), single[k], rtol=1e-6, atol=1e-7) for k in single)
    # The record hashes every shard and the index: a changed shard is a changed recipe.
    files = read_record(out)["ingredients"][0]["files"]
    assert {INDEX, *shards_a} <= files.keys()


def test_a_sharded_and_a_single_file_ingredient_together(sharded, tiny_suite, tmp_path):
    mixed = build_soup(
        SoupConfig(ingredients=[str(sharded["policy"]), str(tiny_suite.policy_alt)], output=str(tmp_path / "mixed"))
    )
    plain = build_soup(
        SoupConfig(ingredients=[str(tiny_suite.policy), str(tiny_suite.policy_alt)], output=str(tmp_path / "plain"))
    )
    got, want = _state(mixed), _state(plain)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def _twice(shards, weight_map):
    first, second, _ = shards
    name = next(iter(shards[first]))
    shards[second][name] = shards[first][name].clone()


def _moved(shards, weight_map):
    first, second, _ = shards
    weight_map[next(iter(shards[first]))] = second


def _ghost(shards, weight_map):
    first, _, _ = shards
    weight_map["model.ghost.weight"] = first


def _unlisted(shards, weight_map):
    _, _, third = shards
    del weight_map[next(iter(shards[third]))]


def _outside(shards, weight_map):
    weight_map[next(iter(weight_map))] = "../elsewhere.safetensors"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_twice, r"tensor '.*' is stored twice \(model-00001-of-00003\.safetensors and model-00002-of-00003"),
        (_moved, rf"{INDEX} places tensor '.*' in model-00002-of-00003\.safetensors, but it is in model-00001-of"),
        (_ghost, rf"{INDEX} places tensor 'model\.ghost\.weight' in model-00001-of-00003\.safetensors, but no shard"),
        (_unlisted, rf"model-00003-of-00003\.safetensors holds 1 tensor\(s\) that {INDEX} does not list"),
        (_outside, rf"{INDEX} names shard '\.\./elsewhere\.safetensors', which is not a file inside"),
    ],
    ids=["stored-twice", "wrong-shard", "not-in-any-shard", "unlisted", "outside"],
)
def test_inconsistent_shards_are_refused_naming_the_files(tiny_suite, tmp_path, edit, match):
    bad = _write_shards(tiny_suite.policy_alt, tmp_path / "bad", edit=edit)
    out = tmp_path / "soup"
    with pytest.raises(SoupError, match=rf"ingredient 2 \({bad}\): {match}"):
        build_soup(SoupConfig(ingredients=[str(tiny_suite.policy), str(bad)], output=str(out)))
    _assert_nothing_left(out)


def test_a_missing_shard_and_an_unreadable_index_are_refused(tiny_suite, tmp_path):
    good = _write_shards(tiny_suite.policy_alt, tmp_path / "good")
    out = tmp_path / "soup"
    build_soup(SoupConfig(ingredients=[str(tiny_suite.policy), str(good)], output=str(out)))  # intact: fine
    shutil.rmtree(out)

    missing = shutil.copytree(good, tmp_path / "missing")
    (missing / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(
        SoupError, match=rf"ingredient 2 .*shard model-00002-of-00003\.safetensors, listed in {INDEX}, is missing"
    ):
        build_soup(SoupConfig(ingredients=[str(tiny_suite.policy), str(missing)], output=str(out)))
    _assert_nothing_left(out)

    for text, match in [
        ("{not json", "cannot be read as JSON"),
        ('{"metadata": {}}', 'has no "weight_map"'),
        ('{"weight_map": {}}', "lists no tensors"),
    ]:
        broken = tmp_path / f"broken-{len(text)}"
        shutil.copytree(good, broken)
        (broken / INDEX).write_text(text)
        with pytest.raises(SoupError, match=rf"ingredient 1 \({broken}\): {INDEX} {match}"):
            build_soup(SoupConfig(ingredients=[str(broken), str(tiny_suite.policy)], output=str(out)))
        _assert_nothing_left(out)
