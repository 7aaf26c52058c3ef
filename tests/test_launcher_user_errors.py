"""User errors at first contact: each launcher, run as a user runs it (a subprocess), refuses with exit 2 and
`error: <the flag> ...` on stderr, without a traceback and before Ray, vLLM or any weights start.

Every case is one command a user could type with the tiny suite: a length the models cannot hold (the
issue's `--engine vllm` with the default `--data.max_len` 2048 and a 512-position model), a key flag the
rows lack (`KeyError: 'input'` before), model and dataset paths that are missing or are not what they
should be, outputs that cannot be written, and flag combinations where a flag would do nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from openrlhf_pilaf.testing.tiny_models import copy_without_tokenizer
from tests.online_dpo_helpers import iterative_argv, launcher_argv, write_prompts

pytestmark = [pytest.mark.openrlhf]

# What a refusal must never print: it comes before the engines, Ray and the models.
STARTED = ("Traceback", "Loading weights", "Started a local Ray instance", "Initializing a V1 LLM engine")
CLI_TIMEOUT_S = 180
SHORT_CONTEXT = 128  # positions of the copied reward model whose config says less than the suite's 512

NO_REWARD_FUNC = "def score(queries):\n    return [0.0 for _ in queries]\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_suite):
    """Prompt files good and bad, a reward model with a shorter context, a directory that is no checkpoint."""
    root = tmp_path_factory.mktemp("user_errors")
    short_reward = root / "short_reward"
    shutil.copytree(tiny_suite.reward, short_reward)  # a few MB; only its config.json is read
    config = json.loads((short_reward / "config.json").read_text())
    config["max_position_embeddings"] = SHORT_CONTEXT
    (short_reward / "config.json").write_text(json.dumps(config))
    copy_without_tokenizer(tiny_suite.policy, root / "no_tokenizer")  # as a trainer that saves only the model
    (root / "not_a_checkpoint").mkdir()
    (root / "not_a_checkpoint" / "README").write_text("weights are elsewhere\n")
    (root / "empty.jsonl").write_text("")
    (root / "corrupt.jsonl").write_text('{"prompt": "a"}\n{not json\n')
    (root / "holes.jsonl").write_text("\n".join(json.dumps(r) for r in [{"prompt": "a"}, {"other": 1}]) + "\n")
    (root / "no_reward_func.py").write_text(NO_REWARD_FUNC)
    (root / "a_file").write_text("not a directory\n")
    return SimpleNamespace(
        root=root,
        prompts=write_prompts(root / "prompts.jsonl"),
        input_prompts=write_prompts(root / "input.jsonl", key="question"),
        short_reward=short_reward,
        not_a_checkpoint=root / "not_a_checkpoint",
        empty=root / "empty.jsonl",
        corrupt=root / "corrupt.jsonl",
        holes=root / "holes.jsonl",
        no_reward_func=root / "no_reward_func.py",
        a_file=root / "a_file",
    )


def run_cli(module: str, argv: list[str], cwd: Path) -> tuple[int, str]:
    """`python -m openrlhf_pilaf.cli.<module> ARGV` as a user runs it: (exit status, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", f"openrlhf_pilaf.cli.{module}", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    return proc.returncode, proc.stderr


def assert_refused(module: str, argv: list[str], cwd: Path, *expected: str) -> str:
    """Exit 2, one `error: ...` naming what it must, nothing started; returns the error text."""
    rc, err = run_cli(module, argv, cwd)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 2 and errors, f"exit {rc}, stderr:\n{err[-3000:]}"
    message = err[err.index(errors[-1]) :]
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"
    for marker in STARTED:
        assert marker not in err, f"{marker!r}: the refusal came too late:\n{err[-3000:]}"
    return message


def without(argv: list[str], flag: str) -> list[str]:
    """argv without `flag` and its value (so the launcher's default applies)."""
    i = argv.index(flag)
    return argv[:i] + argv[i + 2 :]


def dpo_argv(tiny_suite, files, out: Path, *extra: str, engine: str = "torch") -> list[str]:
    return launcher_argv(tiny_suite, files.prompts, out, "pilaf", *extra, engine=engine)


# ------------------------------------------------------------------------ lengths against the models' context


@pytest.mark.parametrize("engine", ["vllm", "torch"])
def test_default_max_len_above_the_models_context_is_refused_before_ray(tiny_suite, files, tmp_path, engine):
    # The issue: a 512-position model and the default --data.max_len 2048; vLLM refused it only inside
    # RolloutRayActor.__init__. One rule for both engines: the torch engine would fail on the first long prompt.
    argv = without(dpo_argv(tiny_suite, files, tmp_path / "run", engine=engine), "--data.max_len")
    message = assert_refused(
        "train_dpo_ray",
        argv,
        tmp_path,
        "error: --data.max_len 2048 exceeds the context of --actor.model_name_or_path",
        str(tiny_suite.policy),
        "config.json max_position_embeddings 512",
        "--ref.model_name_or_path",
        "--reward.model_name_or_path",
        "give --data.max_len 512 or less",
    )
    assert "--rollout.max_new_tokens" not in message  # 6 fits
    assert not (tmp_path / "run").exists()


def test_a_reward_model_with_a_shorter_context_is_named(tiny_suite, files, tmp_path):
    argv = dpo_argv(
        tiny_suite,
        files,
        tmp_path / "run",
        "--reward.model_name_or_path",
        str(files.short_reward),
        "--data.max_len",
        "256",
        "--rollout.max_new_tokens",
        "200",
    )
    message = assert_refused(
        "train_dpo_ray",
        argv,
        tmp_path,
        f"error: --data.max_len 256 exceeds the context of --reward.model_name_or_path '{files.short_reward}' "
        f"(config.json max_position_embeddings {SHORT_CONTEXT}): give --data.max_len {SHORT_CONTEXT} or less",
        f"--rollout.max_new_tokens 200 exceeds the context of --reward.model_name_or_path '{files.short_reward}'",
    )
    assert "--actor.model_name_or_path" not in message  # 256 fits the policy's 512


def test_evaluate_max_len_above_the_models_context_is_refused(tiny_suite, files, tmp_path):
    argv = ["--model", str(tiny_suite.policy), "--ref", str(tiny_suite.reference), "--reward", str(tiny_suite.reward)]
    argv += ["--data", str(files.prompts), "--data.input_key", "prompt", "--out", str(tmp_path / "eval.json")]
    assert_refused(
        "evaluate",
        [*argv, "--max_new_tokens", "8"],  # the default --data.max_len 2048
        tmp_path,
        "error: --data.max_len 2048 exceeds the context of --model",
        "--ref",
        "--reward",
        "give --data.max_len 512 or less",
    )
    assert not (tmp_path / "eval.json").exists()


def test_demo_responses_longer_than_its_models_hold_are_refused_under_the_demo_flag(tmp_path):
    message = assert_refused(
        "demo",
        ["--demo.engine", "torch", "--demo.max_new_tokens", "500", "--demo.out", str(tmp_path / "out")],
        tmp_path,
        "error: --demo.max_new_tokens 500 + ",
        "the demo's models",
        "max_position_embeddings 512",
    )
    assert "or less" in message and "--data.max_len" not in message
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ key flags against the rows


def test_evaluate_input_key_the_rows_lack_lists_their_keys(tiny_suite, files, tmp_path):
    # The issue: rows with `prompt` and the default --data.input_key input ended in KeyError: 'input'.
    argv = ["--model", str(tiny_suite.policy), "--ref", str(tiny_suite.reference), "--reward", str(tiny_suite.reward)]
    argv += ["--data", str(files.prompts), "--data.max_len", "64", "--max_new_tokens", "8"]
    argv += ["--out", str(tmp_path / "eval.json"), "--engine", "torch"]
    assert_refused(
        "evaluate",
        argv,
        tmp_path,
        f"error: --data.input_key 'input': no such key in the rows of --data '{files.prompts}'; their keys: 'prompt'",
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--data.input_key", "input"), "error: --data.input_key 'input': no such key in the rows of"),
        (("--data.label_key", "answer"), "error: --data.label_key 'answer': no such key in the rows of"),
    ],
)
def test_dpo_key_flags_the_rows_lack_are_refused(tiny_suite, files, tmp_path, extra, expected):
    argv = dpo_argv(tiny_suite, files, tmp_path / "run", *extra)
    assert_refused("train_dpo_ray", argv, tmp_path, expected, "--data.prompt_dataset", "their keys: 'prompt'")


def test_iterative_dpo_input_key_the_rows_lack_is_refused(tiny_suite, files, tmp_path):
    argv = iterative_argv(tiny_suite, files.input_prompts, tmp_path / "run", "vanilla")
    assert_refused(
        "train_dpo_ray", argv, tmp_path, "error: --data.input_key 'prompt': no such key", "their keys: 'question'"
    )


def test_eval_dataset_without_the_input_key_is_named(tiny_suite, files, tmp_path):
    argv = dpo_argv(
        tiny_suite, files, tmp_path / "run", "--eval.steps", "1", "--eval.dataset", str(files.input_prompts)
    )
    assert_refused(
        "train_dpo_ray",
        argv,
        tmp_path,
        f"error: --data.input_key 'prompt': no such key in the rows of --eval.dataset '{files.input_prompts}'",
    )


def test_rows_without_a_prompt_are_listed(tiny_suite, files, tmp_path):
    argv = dpo_argv(tiny_suite, files, tmp_path / "run", "--data.prompt_dataset", str(files.holes))
    assert_refused(
        "train_dpo_ray",
        argv,
        tmp_path,
        "error: --data.input_key 'prompt' of --data.prompt_dataset",
        "row 1 (counting from 0) without a prompt",
    )


# ------------------------------------------------------------------------ paths that are not what they should be


@pytest.mark.parametrize(
    ("flag", "path", "expected"),
    [
        ("--actor.model_name_or_path", "missing", "no such directory"),
        ("--actor.model_name_or_path", "not_a_checkpoint", "is not a Hugging Face checkpoint (no config.json"),
        ("--actor.model_name_or_path", "a_file", "is a file"),
        ("--actor.model_name_or_path", "no_tokenizer", "has no tokenizer"),
        ("--ref.model_name_or_path", "missing", "no such directory"),
        ("--reward.model_name_or_path", "not_a_checkpoint", "is not a Hugging Face checkpoint"),
    ],
)
def test_model_paths_that_are_no_checkpoint_are_refused(tiny_suite, files, tmp_path, flag, path, expected):
    where = str(files.root / path)
    argv = dpo_argv(tiny_suite, files, tmp_path / "run", flag, where)
    assert_refused("train_dpo_ray", argv, tmp_path, f"error: {flag} '{where}'", expected)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ("--data.prompt_dataset", "{root}/missing.jsonl"),
            "error: --data.prompt_dataset '{root}/missing.jsonl': no such",
        ),
        (
            ("--data.prompt_dataset", "{root}/empty.jsonl"),
            "error: --data.prompt_dataset '{root}/empty.jsonl' is an empty",
        ),
        (
            ("--data.prompt_dataset", "{root}/corrupt.jsonl"),
            "error: --data.prompt_dataset '{root}/corrupt.jsonl': cannot",
        ),
        (("--data.prompt_split", "test"), "error: --data.prompt_split 'test': --data.prompt_dataset"),
        (("--data.prompt_probs", "0.5,0.5"), "error: --data.prompt_probs has 2 values for 1 dataset"),
        (
            ("--eval.steps", "1", "--eval.dataset", "{root}/missing.jsonl"),
            "error: --eval.dataset '{root}/missing.jsonl'",
        ),
    ],
)
def test_datasets_that_cannot_give_prompts_are_refused(tiny_suite, files, tmp_path, extra, expected):
    extra = tuple(e.format(root=files.root) for e in extra)
    argv = dpo_argv(tiny_suite, files, tmp_path / "run", *extra)
    assert_refused("train_dpo_ray", argv, tmp_path, expected.format(root=files.root))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--reward.remote_url", "{root}/missing.py"), "error: --reward.remote_url '{root}/missing.py': no such file"),
        (("--reward.remote_url", "{root}/no_reward_func.py"), "defines no reward_func"),
        (
            ("--reward.remote_url", "ftp://example.org/rm"),
            "error: --reward.remote_url 'ftp://example.org/rm' is neither",
        ),
        (("--ckpt.output_dir", "{root}/a_file"), "error: --ckpt.output_dir '{root}/a_file' is a file"),
        (("--ckpt.output_dir", "{root}/a_file/run"), "error: --ckpt.output_dir '{root}/a_file/run': "),
        (("--logger.tensorboard_dir", "{root}/a_file/tb"), "error: --logger.tensorboard_dir"),
    ],
)
def test_reward_files_and_outputs_are_checked_before_the_models_load(tiny_suite, files, tmp_path, extra, expected):
    extra = [e.format(root=files.root) for e in extra]
    argv = dpo_argv(tiny_suite, files, tmp_path / "run", *extra)  # a --reward.remote_url replaces the reward model
    assert_refused("train_dpo_ray", argv, tmp_path, expected.format(root=files.root))


def test_a_missing_labels_file_is_refused_before_the_round_starts(tiny_suite, files, tmp_path):
    labels = files.root / "labels_of_round_1.csv"
    argv = iterative_argv(tiny_suite, files.prompts, tmp_path / "run", "vanilla", "--oracle.type", "file", reward=False)
    assert_refused(
        "train_dpo_ray",
        [*argv, "--oracle.labels_file", str(labels)],
        tmp_path,
        f"error: --oracle.labels_file '{labels}'",
    )


def test_evaluate_out_and_model_paths(tiny_suite, files, tmp_path):
    argv = ["--ref", str(tiny_suite.reference), "--reward", str(tiny_suite.reward), "--data", str(files.prompts)]
    argv += ["--data.input_key", "prompt", "--data.max_len", "64", "--max_new_tokens", "8"]
    out = f"{files.a_file}/eval.json"
    assert_refused(
        "evaluate", [*argv, "--model", str(tiny_suite.policy), "--out", out], tmp_path, f"error: --out '{out}'"
    )
    where = str(files.not_a_checkpoint)
    assert_refused(
        "evaluate",
        [*argv, "--model", where, "--out", str(tmp_path / "e.json")],
        tmp_path,
        f"error: --model '{where}' is not a Hugging Face checkpoint",
    )


def test_demo_output_that_cannot_be_a_directory_is_refused(files, tmp_path):
    assert_refused(
        "demo",
        ["--demo.engine", "torch", "--demo.out", str(files.a_file)],
        tmp_path,
        f"error: --demo.out '{files.a_file}'",
    )


# ------------------------------------------------------------------------ flags that would do nothing


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--eval.dataset", "{prompts}"), "error: --eval.dataset is evaluated every --eval.steps steps"),
        (("--ref.num_gpus_per_node", "2"), "error: --engine torch runs everything in one process; --ref.num_gpus"),
        (("--reward.num_nodes", "2"), "error: --engine torch runs everything in one process; --reward.num_nodes 2"),
    ],
)
def test_flags_that_would_do_nothing_are_refused(tiny_suite, files, tmp_path, extra, expected):
    extra = tuple(e.format(prompts=files.prompts) for e in extra)
    assert_refused("train_dpo_ray", dpo_argv(tiny_suite, files, tmp_path / "run", *extra), tmp_path, expected)


def test_a_reward_model_people_make_redundant_is_refused(tiny_suite, files, tmp_path):
    argv = iterative_argv(tiny_suite, files.prompts, tmp_path / "run", "vanilla", "--oracle.type", "file")
    assert_refused(
        "train_dpo_ray",
        argv,
        tmp_path,
        "error: --oracle.type file: people label the pairs, so --reward.model_name_or_path would only score",
    )


# ------------------------------------------------------------------------ OpenRLHF PPO's namespace (cli.train_ppo_ray)


def _ppo_args(**flags):
    """OpenRLHF 0.11.2 train_ppo_ray's parsed flags that the pre-flight reads, hierarchized as train() gets them."""
    from openrlhf.utils.config import hierarchize

    flat = {
        "actor.model_name_or_path": None,
        "reward.model_name_or_path": None,
        "critic.model_name_or_path": None,
        "data.max_len": 2048,
        "rollout.max_new_tokens": None,
        "data.prompt_dataset": None,
        "data.prompt_probs": None,
        "data.prompt_split": "train",
        "data.max_samples": int(1e8),
        "data.input_key": "input",
        "data.label_key": None,
        "eval.dataset": None,
        "eval.split": "train",
        "train.seed": 42,
        "use_ms": False,
    }
    flat.update({k.replace("__", "."): v for k, v in flags.items()})
    return hierarchize(SimpleNamespace(**flat))


def test_openrlhf_ppo_namespace_gets_the_same_checks(tiny_suite, files):
    from openrlhf_pilaf.utils.dataset_checks import DatasetError
    from openrlhf_pilaf.utils.launch_checks import check_openrlhf_ppo_args
    from openrlhf_pilaf.utils.model_limits import ModelLimitError

    good = dict(
        actor__model_name_or_path=str(tiny_suite.policy),
        reward__model_name_or_path=f"{tiny_suite.reward},{files.short_reward}",  # OpenRLHF: comma-separated
        data__prompt_dataset=str(files.prompts),
        data__input_key="prompt",
        data__max_len=SHORT_CONTEXT,
    )
    check_openrlhf_ppo_args(_ppo_args(**good))
    with pytest.raises(
        ModelLimitError, match=rf"--data\.max_len 2048 exceeds .*--reward\.model_name_or_path '{files.short_reward}'"
    ):
        check_openrlhf_ppo_args(_ppo_args(**{**good, "data__max_len": 2048}))
    with pytest.raises(ModelLimitError, match=r"--rollout\.max_new_tokens 600 exceeds .*--critic\.model_name_or_path"):
        check_openrlhf_ppo_args(
            _ppo_args(**good, rollout__max_new_tokens=600, critic__model_name_or_path=str(tiny_suite.policy))
        )
    with pytest.raises(ModelLimitError, match=r"--salsa\.ingredients \(the soup\) '/nowhere/soup': no such directory"):
        check_openrlhf_ppo_args(_ppo_args(**good), reference_path="/nowhere/soup")
    with pytest.raises(DatasetError, match=r"--data\.input_key 'input': no such key .* their keys: 'prompt'"):
        check_openrlhf_ppo_args(_ppo_args(**{**good, "data__input_key": "input"}))
    with pytest.raises(DatasetError, match=r"--data\.input_key 'prompt': no such key in the rows of --eval\.dataset"):
        check_openrlhf_ppo_args(_ppo_args(**good, eval__dataset=str(files.input_prompts)))


# ------------------------------------------------------------------------ the context rule itself (no files)


@pytest.mark.parametrize(
    ("config", "tokenizer_config", "positions", "source"),
    [
        ({"max_position_embeddings": 512}, None, 512, "config.json max_position_embeddings"),
        ({"n_positions": 1024, "max_position_embeddings": 2048}, None, 1024, "config.json n_positions"),  # smallest
        ({"text_config": {"max_position_embeddings": 4096}}, None, 4096, "config.json max_position_embeddings"),
        (
            {"max_position_embeddings": 4096, "rope_scaling": {"rope_type": "linear", "factor": 2.0}},
            None,
            8192,
            "config.json max_position_embeddings x RoPE factor 2",
        ),
        (  # llama3 / yarn: max_position_embeddings is already the scaled length (as vLLM reads it)
            {"max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
            None,
            131072,
            "config.json max_position_embeddings",
        ),
        ({"max_position_embeddings": 4096}, {"model_max_length": 2048}, 2048, "tokenizer_config.json model_max_length"),
        ({"max_position_embeddings": 512}, {"model_max_length": int(1e30)}, 512, "config.json max_position_embeddings"),
        ({"hidden_size": 8}, None, None, "config.json: no position key"),
    ],
)
def test_context_is_read_as_vllm_derives_it(config, tokenizer_config, positions, source):
    from openrlhf_pilaf.utils.model_limits import context_from_config

    got = context_from_config("--m", "p", config, tokenizer_config)
    assert (got.positions, got.source) == (positions, source)


def test_every_length_over_every_model_is_named_with_what_fits():
    from openrlhf_pilaf.utils.model_limits import Length, ModelContext, ModelLimitError, check_lengths

    small, big = ModelContext("--a", "A", 512, "k"), ModelContext("--b", "B", 4096, "k")
    check_lengths([Length("--len", 512), Length("--new", None)], [small, big])  # equal fits; None is not checked
    with pytest.raises(ModelLimitError) as e:
        check_lengths([Length("--len", 1000), Length("--new", 600, extra=48, extra_what="prompt tokens")], [small, big])
    first, second = str(e.value).split("\n  ")
    assert first == "--len 1000 exceeds the context of --a 'A' (k 512): give --len 512 or less"
    assert (
        second == "--new 600 + 48 prompt tokens (= 648) exceeds the context of --a 'A' (k 512): give --new 464 or less"
    )
