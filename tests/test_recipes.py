"""Every launch in examples/*.sh, dry-run through the parser of the program it launches.

Each recipe runs with PILAF_DRY_RUN=1: its `run` wrapper (examples/_common.sh) records every command's
argv (NUL-separated, count first) instead of running it. Each argv then goes to the code that would
read it: our launchers' `parse_config` / `make_parser` (with every dataclass check), and OpenRLHF's own
entry points' parsers. OpenRLHF builds those inside `if __name__ == "__main__":`, so `openrlhf_entry_args`
executes exactly that block's source (with the module's standard-library imports) and a `train` that
records the parsed, fixed-up namespace instead of training: OpenRLHF's parser, its `hierarchize` and its
own argument checks all run, without importing Ray, vLLM or DeepSpeed. No model is loaded, nothing is
downloaded. A flag that a parser does not know fails the test (see the negative checks at the end).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
RECIPES = sorted(p.name for p in EXAMPLES.glob("*.sh") if not p.name.startswith("_"))
GPUS_PER_NODE = 8


# ------------------------------------------------------------------------------- running the recipes
def dry_run(script: str, *args: str, env: dict[str, str], tmp_path: Path, check: bool = True) -> list[list[str]]:
    """The argv of every command `script` would run (through `run` in examples/_common.sh)."""
    capture = tmp_path / f"capture-{script}-{'-'.join(args)}-{len(list(tmp_path.iterdir()))}"
    full_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PILAF_DRY_RUN": "1",
        "PILAF_DRY_RUN_FILE": str(capture),
        **env,
    }
    proc = subprocess.run(
        ["bash", str(EXAMPLES / script), *args], env=full_env, capture_output=True, text=True, timeout=60
    )
    if check:
        assert proc.returncode == 0, f"{script} {args}: exit {proc.returncode}\n{proc.stderr}"
    elif proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, script, proc.stdout, proc.stderr)
    return read_capture(capture)


def read_capture(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    fields = path.read_bytes().split(b"\0")
    assert fields[-1] == b"", "a truncated capture"
    fields = [f.decode() for f in fields[:-1]]
    commands, i = [], 0
    while i < len(fields):
        n = int(fields[i])
        commands.append(fields[i + 1 : i + 1 + n])
        i += 1 + n
    return commands


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    """(what runs, its arguments): a module for `python -m` / `deepspeed --module`, a path for a script.
    `ray job submit ... -- ENTRYPOINT` is unwrapped to its entrypoint."""
    if argv[:3] == ["ray", "job", "submit"]:
        assert "--" in argv, f"ray job submit without an entrypoint: {argv}"
        assert "--address" in argv[: argv.index("--")], f"ray job submit without --address: {argv}"
        argv = argv[argv.index("--") + 1 :]
    if argv[0] == "deepspeed":
        i = argv.index("--module")
        assert argv[1:i] == ["--num_gpus", str(GPUS_PER_NODE)], argv[:i]
        return argv[i + 1], argv[i + 2 :]
    assert Path(argv[0]).name.startswith("python"), f"not a python launch: {argv}"
    if argv[1] == "-m":
        return argv[2], argv[3:]
    return str(Path(argv[1]).resolve()), argv[2:]


# ------------------------------------------------------------------- OpenRLHF's own entry-point parsers
def openrlhf_entry_args(module: str, argv: list[str]) -> SimpleNamespace:
    """The namespace OpenRLHF's `module` would hand to `train(args)` for `argv`, from its own `__main__` code.

    SystemExit (argparse's refusal, stderr in the message) and AssertionError (OpenRLHF's checks) propagate.
    """
    origin = importlib.util.find_spec(module).origin
    tree = ast.parse(Path(origin).read_text(), origin)

    def is_main(node: ast.stmt) -> bool:
        return isinstance(node, ast.If) and ast.unparse(node.test).replace("'", '"') == '__name__ == "__main__"'

    (main_block,) = [n for n in tree.body if is_main(n)]

    def stdlib(node: ast.stmt) -> bool:
        if isinstance(node, ast.Import):
            return all(a.name.split(".")[0] in sys.stdlib_module_names for a in node.names)
        return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in sys.stdlib_module_names

    body = [n for n in tree.body if stdlib(n)] + main_block.body
    code = compile(ast.Module(body=body, type_ignores=[]), origin, "exec")
    captured: list[SimpleNamespace] = []
    saved = sys.argv
    sys.argv = [module, *argv]
    try:
        exec(code, {"__name__": "recipe_dry_run", "train": captured.append})
    finally:
        sys.argv = saved
    assert len(captured) == 1, f"{module}'s __main__ block did not call train() once"
    return captured[0]


def refusal(fn: Callable, *args):
    """fn(*args), with argparse's exit turned into an AssertionError carrying its message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return fn(*args)
    except SystemExit as e:
        raise AssertionError(f"refused (exit {e.code}): {err.getvalue().strip()}") from None


# ----------------------------------------------------------------------- one checker per launched program
def check_dpo(argv: list[str]):
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from openrlhf_pilaf.trainer.online_dpo.runtime_ray import gpu_requests
    from openrlhf_pilaf.utils.ray_resources import total_gpus

    cfg = refusal(parse_config, argv)
    assert cfg.engine == "vllm"
    assert cfg.dpo.beta == 0.1
    assert cfg.eval.dataset is not None
    if cfg.dpo.mode == "online":
        assert cfg.eval.steps == 50
    else:
        assert cfg.dpo.mode == "iterative" and cfg.dpo.first_round_sampler == "vanilla"
        assert cfg.eval.steps == -1  # iterative evaluates after every round
    return cfg, total_gpus(gpu_requests(cfg))


def check_ppo(argv: list[str]):
    from openrlhf_pilaf.cli.train_ppo_ray import ACTOR_FLAG, make_parser
    from openrlhf_pilaf.trainer.salsa import SalsaConfig
    from openrlhf_pilaf.utils.argv import with_flag_value
    from openrlhf_pilaf.utils.config_cli import dataclass_from_namespace
    from openrlhf_pilaf.utils.ray_resources import openrlhf_ppo_gpu_requests, total_gpus

    ns, rest = make_parser().parse_known_args(argv)
    salsa = dataclass_from_namespace(SalsaConfig, ns)
    assert not [a for a in rest if a.startswith("--salsa.")], f"--salsa.* flags left for OpenRLHF: {rest}"
    if salsa.init_policy:  # what prepare_launch does once the soup is built
        rest = with_flag_value(rest, ACTOR_FLAG, str(salsa.soup_output()))
    args = refusal(openrlhf_entry_args, "openrlhf.cli.train_ppo_ray", rest)
    return (salsa, args), total_gpus(openrlhf_ppo_gpu_requests(args))


def check_sft(argv: list[str]):
    args = refusal(openrlhf_entry_args, "openrlhf.cli.train_sft", argv)
    assert args.model.model_name_or_path and args.data.dataset
    return args, GPUS_PER_NODE


def check_build_soup(argv: list[str]):
    from openrlhf_pilaf.cli.build_soup import make_parser
    from openrlhf_pilaf.soup.config import SoupConfig
    from openrlhf_pilaf.utils.config_cli import dataclass_from_namespace

    return dataclass_from_namespace(SoupConfig, refusal(make_parser().parse_args, argv)), 0


def check_evaluate(argv: list[str]):
    from openrlhf_pilaf.cli.evaluate import parse_config

    cfg = refusal(parse_config, argv)
    assert cfg.evaluate.samples_per_prompt == 4 and cfg.evaluate.engine == "vllm" and cfg.evaluate.beta == 0.1
    return cfg, 1


def check_plot(argv: list[str]):
    from openrlhf_pilaf.cli.plot import make_parser

    return refusal(make_parser().parse_args, argv), 0


def check_prepare(argv: list[str]):
    spec = importlib.util.spec_from_file_location("prepare_hh_rlhf", EXAMPLES / "prepare_hh_rlhf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return refusal(module.make_parser().parse_args, argv), 0


CHECKERS: dict[str, Callable] = {
    "openrlhf_pilaf.cli.train_dpo_ray": check_dpo,
    "openrlhf_pilaf.cli.train_ppo_ray": check_ppo,
    "openrlhf.cli.train_sft": check_sft,
    "openrlhf_pilaf.cli.build_soup": check_build_soup,
    "openrlhf_pilaf.cli.evaluate": check_evaluate,
    "openrlhf_pilaf.cli.plot": check_plot,
    str((EXAMPLES / "prepare_hh_rlhf.py").resolve()): check_prepare,
}


def check_command(argv: list[str], nodes: int = 1):
    """(program, what its parser made of argv); fails on anything its parser or checks refuse."""
    program, args = split_command(argv)
    assert program in CHECKERS, f"a recipe launches {program}, which this test cannot check: {argv}"
    parsed, gpus = CHECKERS[program](args)
    assert gpus <= nodes * GPUS_PER_NODE, f"{program} asks for {gpus} GPUs on {nodes} node(s)"
    return program, parsed


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def work(tmp_path):
    """An empty work directory except the chat template the SFT command reads with `$(<...)`."""
    root = tmp_path / "work"
    (root / "data" / "hh_rlhf").mkdir(parents=True)
    (root / "data" / "hh_rlhf" / "chat_template.jinja").write_text("{{ messages }}")
    return root


def _env(work: Path, **extra: str) -> dict[str, str]:
    return {"WORK": str(work), "PYTHON": "python", **extra}


def _samplers() -> set[str]:
    from openrlhf_pilaf.samplers.base import SAMPLERS

    return set(SAMPLERS)


# ------------------------------------------------------------------------------------------------ tests
def test_every_recipe_is_covered_and_strict():
    assert set(RECIPES) == {
        "evaluate_and_plot.sh",
        "iterative_dpo.sh",
        "online_dpo.sh",
        "online_dpo_overfit.sh",
        "prepare_data.sh",
        "salsa.sh",
        "sft_hh.sh",
    }, "a new recipe needs a test here"
    for name in RECIPES:
        text = (EXAMPLES / name).read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text, name


@pytest.mark.parametrize("nodes", [1, 2])
def test_online_and_iterative_dpo_cover_every_sampler(work, tmp_path, nodes):
    """Neither launcher touches a path: the work directory is empty and parse_config still accepts."""
    seen: dict[str, set[str]] = {"online": set(), "iterative": set()}
    env = _env(work, NODES=str(nodes), **({"RAY_ADDRESS": "auto"} if nodes > 1 else {}))
    for script, mode in (("online_dpo.sh", "online"), ("iterative_dpo.sh", "iterative")):
        for sampler in sorted(_samplers()):
            commands = dry_run(script, sampler, env=env, tmp_path=tmp_path)
            assert len(commands) == 1
            program, cfg = check_command(commands[0], nodes)
            assert program == "openrlhf_pilaf.cli.train_dpo_ray"
            assert cfg.dpo.mode == mode and cfg.pilaf.sampler == sampler
            assert cfg.actor.num_nodes == max(1, nodes - 1)
            assert cfg.reference_path == str(work / "sft" / "llama3.1-8b-hh")
            assert cfg.reward.model_name_or_path == "Skywork/Skywork-Reward-Llama-3.1-8B"
            assert cfg.data.input_key == "prompt" and cfg.data.apply_chat_template
            if sampler == "best_of_n":
                assert cfg.pilaf.options["n"] == 8
            if mode == "iterative":
                assert (cfg.dpo.rounds, cfg.dpo.epochs, cfg.dpo.prompts_per_round) == (3, 2, 20000)
            seen[mode].add(cfg.pilaf.sampler)
    assert seen == {"online": _samplers(), "iterative": _samplers()}
    assert not (work / "runs").exists(), "a dry run wrote a run directory"


def test_several_nodes_need_a_ray_cluster(work, tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as e:
        dry_run("online_dpo.sh", "pilaf", env=_env(work, NODES="2"), tmp_path=tmp_path, check=False)
    assert "ray start --head" in e.value.stderr


def test_ray_job_submit_is_unwrapped(work, tmp_path):
    env = _env(work, NODES="2", RAY_JOB_ADDRESS="http://head:8265")
    (command,) = dry_run("online_dpo.sh", "hybrid", env=env, tmp_path=tmp_path)
    assert command[:5] == ["ray", "job", "submit", "--address", "http://head:8265"]
    assert check_command(command, 2)[1].pilaf.sampler == "hybrid"


def test_sft_and_overfit_recipe(work, tmp_path):
    (sft,) = dry_run("sft_hh.sh", env=_env(work), tmp_path=tmp_path)
    program, args = check_command(sft)
    assert program == "openrlhf.cli.train_sft"
    assert (args.train.max_epochs, args.train.seed) == (1, 42)
    assert args.data.tokenizer_chat_template == "{{ messages }}"
    assert args.ckpt.output_dir == str(work / "sft" / "llama3.1-8b-hh")

    commands = dry_run("online_dpo_overfit.sh", env=_env(work), tmp_path=tmp_path)
    parsed = [check_command(c) for c in commands]
    assert [p for p, _ in parsed] == ["openrlhf.cli.train_sft"] + ["openrlhf_pilaf.cli.train_dpo_ray"] * 2
    overfit = parsed[0][1]
    assert overfit.train.max_epochs > args.train.max_epochs
    runs = [cfg for _, cfg in parsed[1:]]
    assert [cfg.pilaf.sampler for cfg in runs] == ["vanilla", "pilaf"]
    for cfg in runs:  # both start from, and are anchored to, the over-fitted SFT
        assert cfg.actor.model_name_or_path == cfg.reference_path == overfit.ckpt.output_dir
        assert cfg.dpo.mode == "online" and cfg.eval.steps == 50


def test_salsa_recipe(work, tmp_path):
    commands = dry_run("salsa.sh", env=_env(work), tmp_path=tmp_path)
    parsed = [check_command(c) for c in commands]
    assert [p for p, _ in parsed] == [
        "openrlhf.cli.train_sft",
        "openrlhf.cli.train_sft",
        "openrlhf_pilaf.cli.build_soup",
        "openrlhf_pilaf.cli.train_ppo_ray",
        "openrlhf_pilaf.cli.train_dpo_ray",
    ]
    sft_a, sft_b, soup = parsed[0][1], parsed[1][1], parsed[2][1]
    assert sft_a.train.seed != sft_b.train.seed
    assert sft_a.model.model_name_or_path == sft_b.model.model_name_or_path
    ingredients = [sft_a.ckpt.output_dir, sft_b.ckpt.output_dir]
    assert soup.ingredients == ingredients
    salsa, ppo = parsed[3][1]
    assert salsa.ingredients == ingredients and salsa.soup_output() == Path(soup.output)
    assert salsa.soup_config().effective_weights == soup.effective_weights  # the soup is reused, not rebuilt
    assert ppo.actor.model_name_or_path == soup.output  # --salsa.init_policy
    assert ppo.algo.kl.init_coef > 0 and ppo.reward.model_name_or_path == "Skywork/Skywork-Reward-Llama-3.1-8B"
    dpo = parsed[4][1]
    assert dpo.salsa.ingredients == ingredients and dpo.salsa.soup_output() == Path(soup.output)
    assert dpo.ref.model_name_or_path is None and dpo.actor.model_name_or_path == soup.output


def test_prepare_data_recipe(work, tmp_path):
    (command,) = dry_run("prepare_data.sh", env=_env(work), tmp_path=tmp_path)
    program, args = check_command(command)
    assert program.endswith("prepare_hh_rlhf.py")
    assert args.dataset == "Anthropic/hh-rlhf" and args.out == str(work / "data" / "hh_rlhf")


def test_prepare_hh_rlhf_parses_transcripts():
    spec = importlib.util.spec_from_file_location("prepare_hh_rlhf", EXAMPLES / "prepare_hh_rlhf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    good = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: fine"
    assert module.parse_transcript(good) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "fine"},
    ]
    assert module.parse_transcript("\n\nHuman: a\n\nHuman: b\n\nAssistant: c") is None
    assert module.parse_transcript("\n\nHuman: a") is None
    prompts, dialogues, skipped = module.convert([{"chosen": good}, {"chosen": good}, {"chosen": "junk"}])
    assert len(prompts) == 1 and prompts[0]["prompt"][-1] == {"role": "user", "content": "and?"}
    assert len(dialogues) == 2 and skipped == 1


def test_evaluate_and_plot_recipe(work, tmp_path):
    """The evaluation does check its paths: stub the checkpoints and prompts it names."""
    for ckpt in [work / "sft" / "llama3.1-8b-hh", work / "models" / "Skywork-Reward-Llama-3.1-8B"] + [
        work / "runs" / f"{setting}-{s}-seed42" / "final" for setting in ("online", "iterative") for s in _samplers()
    ]:
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text("{}")
    from openrlhf_pilaf.testing.prompts import write_prompts

    write_prompts(work / "data" / "hh_rlhf" / "prompts_test.jsonl")
    commands = dry_run("evaluate_and_plot.sh", env=_env(work), tmp_path=tmp_path)
    parsed = [check_command(c) for c in commands]
    evaluated = [cfg.evaluate.model for p, cfg in parsed if p == "openrlhf_pilaf.cli.evaluate"]
    assert len(evaluated) == 2 * len(_samplers())
    plots = [ns for p, ns in parsed if p == "openrlhf_pilaf.cli.plot"]
    assert len(plots) == 2
    assert sorted(str(Path(d) / "final") for ns in plots for d in ns.run_dirs) == sorted(evaluated)


# ------------------------------------------------------------------------------------ negative self-checks
def test_an_unknown_sampler_is_refused_by_the_recipe(work, tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as e:
        dry_run("online_dpo.sh", "bogus", env=_env(work), tmp_path=tmp_path, check=False)
    assert "unknown sampler" in e.value.stderr


@pytest.mark.parametrize(
    ("script", "args", "program"),
    [
        ("online_dpo.sh", ("pilaf",), "openrlhf_pilaf.cli.train_dpo_ray"),
        ("sft_hh.sh", (), "openrlhf.cli.train_sft"),
        ("salsa.sh", (), "openrlhf_pilaf.cli.train_ppo_ray"),
        ("evaluate_and_plot.sh", (), "openrlhf_pilaf.cli.plot"),
    ],
)
def test_an_unknown_flag_fails_the_check(work, tmp_path, script, args, program):
    """The same code path refuses a recipe command with one made-up flag added."""
    if script == "evaluate_and_plot.sh":
        for s in _samplers():
            for setting in ("online", "iterative"):
                (work / "runs" / f"{setting}-{s}-seed42" / "final").mkdir(parents=True)
    commands = [c for c in dry_run(script, *args, env=_env(work), tmp_path=tmp_path) if program in " ".join(c)]
    broken = [*commands[0], "--train.not_a_flag", "1"]
    with pytest.raises(AssertionError, match=r"refused.*not_a_flag|unrecognized arguments"):
        check_command(broken)


def test_openrlhf_entry_args_runs_openrlhfs_own_checks():
    # OpenRLHF's own post-parse assertion (a multiturn SFT needs the chat template) runs too
    with pytest.raises(AssertionError, match="apply_chat_template"):
        openrlhf_entry_args("openrlhf.cli.train_sft", ["--data.multiturn"])
    args = openrlhf_entry_args("openrlhf.cli.train_sft", ["--train.seed", "7"])
    assert args.train.seed == 7 and not hasattr(args, "train.seed")  # hierarchize ran, as before train()
