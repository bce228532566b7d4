"""The command line, run as a user runs it: the installed ``inferax`` console script in a
subprocess. The runs are small and the reports draw few quantities, to keep this quick."""

import os
import pathlib
import subprocess
import sys

import pytest
import xarray as xr

import inferax

SCRIPT = pathlib.Path(sys.executable).parent / "inferax"
SMALL = ["--chains", "2", "--warmup", "100", "--samples", "100"]
FEW_PLOTS = ["--max-plotted", "3", "--max-paired", "2"]

EIGHT_SCHOOLS_FILE = """
from inferax import examples

model = examples.eight_schools_noncentered
data = {"J": 8, "sigma": examples.EIGHT_SCHOOLS["sigma"], "y": examples.EIGHT_SCHOOLS["y"]}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xdg-cache")
    return {**os.environ, "XDG_CACHE_HOME": str(cache), "CI": "true"}


def inferax_cli(*args, env, cwd):
    return subprocess.run(
        [str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory, env):
    out = tmp_path_factory.mktemp("demo") / "out"
    # NUTS only: two runs, the least compiling that covers the demo.
    result = inferax_cli(
        "demo", "--sampler", "nuts", "--out", out, *SMALL, env=env, cwd=out.parent
    )
    assert result.returncode == 0, result.stderr
    return out, result


def test_demo_writes_the_report_and_says_where(demo):
    out, result = demo
    report = out / "report.html"
    assert f"report: {report.resolve()}" in result.stdout
    # The demo ends with one verdict per run, each what diagnostics.check finds.
    *_, heading, first, second = result.stdout.strip().splitlines()
    assert heading == "verdicts (inferax.diagnostics.check):"
    for line, run in zip((first, second), ("eight_schools", "logistic_regression"), strict=True):
        tree = xr.open_datatree(out / f"{run}-nuts" / "posterior.nc", engine="h5netcdf").load()
        findings = inferax.diagnostics.check(tree)
        errors = sorted({f.check for f in findings if f.severity == "error"})
        warnings = sorted({f.check for f in findings if f.severity != "error"})
        verdict = f"FAIL ({', '.join(errors)})" if errors else "PASS"
        verdict += f", warnings: {', '.join(warnings)}" if warnings else ""
        assert line.strip().startswith(f"{run}/nuts: {verdict}: 2 chains x 100 draws"), line
    page = report.read_text()
    assert "id='findings'" in page and "id='comparison'" in page
    post = inferax.load(out / "eight_schools-nuts" / "posterior.nc")
    assert post.draws["tau"].shape == (2, 100)
    summary = (out / "eight_schools-nuts" / "summary.csv").read_text()
    assert "ess_tail" in summary.splitlines()[0] and "theta[7]" in summary


def test_run_writes_posterior_summary_and_report(demo, tmp_path, env):
    (tmp_path / "schools.py").write_text(EIGHT_SCHOOLS_FILE)
    # The same model and shapes as the demo's NUTS run: its compiled programs come from the
    # shared compilation cache.
    result = inferax_cli(
        "run",
        "schools.py",
        *SMALL,
        *FEW_PLOTS,
        "--seed",
        "3",
        "--out",
        "res",
        "--kernel-arg",
        "max_num_doublings=10",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "nuts(max_num_doublings=10" in result.stdout
    # The posterior summary is printed, not only the checks' findings.
    assert "ess_bulk" in result.stdout and "theta[7]" in result.stdout and "tau" in result.stdout
    assert "all checks passed" in result.stdout or "r_hat" in result.stdout
    with xr.open_datatree(tmp_path / "res" / "posterior.nc", engine="h5netcdf") as tree:
        tree = tree.load()
    assert tree["posterior"].attrs["seed"] == 3
    assert tree["posterior"]["theta"].shape == (2, 100, 8)
    assert (tmp_path / "res" / "summary.csv").read_text().startswith(",mean,sd")
    assert "<img src='data:image/png;base64," in (tmp_path / "res" / "report.html").read_text()

    # The run checkpointed as it went; --resume finishes it (here: finds it finished) and
    # gives the same draws, and refuses settings that are not the run's.
    assert (tmp_path / "res" / "checkpoint" / "manifest.json").exists()
    first = inferax.load(tmp_path / "res" / "posterior.nc")
    again = inferax_cli(
        "run",
        "schools.py",
        *SMALL,
        *FEW_PLOTS,
        "--seed",
        "3",
        "--out",
        "res",
        "--resume",
        "--kernel-arg",
        "max_num_doublings=10",
        env=env,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert "resuming schools.py" in again.stdout
    resumed = inferax.load(tmp_path / "res" / "posterior.nc")
    assert (resumed.draws["theta"] == first.draws["theta"]).all()
    refused = inferax_cli(
        "run",
        "schools.py",
        "--chains",
        "2",
        "--warmup",
        "100",
        "--samples",
        "50",
        "--seed",
        "3",
        "--out",
        "res",
        "--resume",
        "--kernel-arg",
        "max_num_doublings=10",
        env=env,
        cwd=tmp_path,
    )
    assert refused.returncode == 1
    assert "num_samples: the run has 100, got 50" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # Without --resume, the previous run is neither continued nor silently deleted.
    fresh = inferax_cli("run", "schools.py", *SMALL, "--out", "res", env=env, cwd=tmp_path)
    assert fresh.returncode == 1
    assert "holds a previous run: continue it with --resume, or replace it with --force" in (
        fresh.stderr
    )
    assert (tmp_path / "res" / "checkpoint" / "manifest.json").exists()


FIT = ["--family", "meanfield", "--steps", "200", "--draws", "300", *FEW_PLOTS]


def test_fit_writes_the_variational_report(tmp_path, env):
    (tmp_path / "schools.py").write_text(EIGHT_SCHOOLS_FILE)
    options = ["--particles", "2", "--objective", "elbo", "--family-arg", "init_scale=0.05"]
    result = inferax_cli(
        "fit", "schools.py", *FIT, *options, "--no-progress", env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    # `fit` writes to MODEL-fit, `run` to MODEL-run: one never overwrites the other.
    tree = xr.open_datatree(tmp_path / "schools-fit" / "posterior.nc", engine="h5netcdf").load()
    assert tree["posterior"]["theta"].shape == (1, 300, 8)
    assert tree["optimization"]["elbo"].shape == (200,)
    page = (tmp_path / "schools-fit" / "report.html").read_text()
    assert "PSIS k-hat = " in page and "<figcaption>ELBO trace</figcaption>" in page
    assert "theta[7]" in result.stdout  # the summary
    # The k-hat on screen is the one in the file, which check finds from the saved draws.
    khat = tree["posterior"].attrs["khat"]
    assert f"PSIS k-hat {khat:.2f} on the 300 draws saved" in result.stdout
    assert inferax.diagnostics.khat(tree) == pytest.approx(khat, abs=1e-3)
    # Nothing is overwritten without --force (refused before anything is compiled).
    again = inferax_cli("fit", "schools.py", *FIT, env=env, cwd=tmp_path)
    assert again.returncode == 1
    assert "holds the outputs of a previous run or fit (posterior.nc): replace them with " in (
        again.stderr
    )
    assert not (tmp_path / "schools-run").exists()
    # --force deletes the previous outputs, and only those, before writing new ones.
    from inferax import cli

    (tmp_path / "schools-fit" / "notes.txt").write_text("mine")
    cli._claim_folder(tmp_path / "schools-fit", force=True)
    assert [p.name for p in (tmp_path / "schools-fit").iterdir()] == ["notes.txt"]


def test_every_option_shows_its_default_in_its_help():
    import argparse

    from inferax import cli_parser

    parser = cli_parser.build_parser(dict.fromkeys(("run", "fit", "report", "demo")))
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, command in commands.choices.items():
        text = " ".join(command.format_help().split())
        for action in command._actions:
            if not action.option_strings or action.dest in ("help", "debug"):
                continue
            formatter = command._get_formatter()
            shown = formatter._expand_help(action) if action.help else ""
            if "default" not in shown:
                missing.append(f"{name} {action.option_strings[0]}")
        assert "(default: " in text
    assert not missing, missing
    fit = commands.choices["fit"].format_help()
    for option in ("--particles", "--objective", "--estimator", "--family-arg", "--progress"):
        assert option in fit


def test_report_compares_saved_runs(demo, tmp_path, env):
    out, _ = demo
    result = inferax_cli(
        "report",
        out / "eight_schools-nuts" / "posterior.nc",
        out / "logistic_regression-nuts" / "posterior.nc",
        "-o",
        tmp_path / "both.html",
        "--title",
        "two models",
        *FEW_PLOTS,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "both.html").read_text()
    assert "<title>two models</title>" in page
    assert "eight_schools-nuts" in page and "logistic_regression-nuts" in page
    assert "id='comparison'" in page


BAD_INPUTS = {
    "missing model file": (["run", "nowhere.py"], "does not exist"),
    "no model": (["run", "empty.py"], "defines no `model`"),
    "syntax error": (["run", "broken.py"], "line 2: syntax error"),
    "unknown sampler": (["run", "schools.py", "--sampler", "nope"], "unknown sampler 'nope'"),
    "corrupt .nc": (["report", "corrupt.nc"], "cannot read corrupt.nc"),
    "nan learning rate": (
        ["fit", "schools.py", "--learning-rate", "nan"],
        "--learning-rate must be finite and > 0, got nan",
    ),
    "no draws": (["fit", "schools.py", "--draws", "0"], "--draws must be at least 2, got 0"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.py").write_text("data = {}\n")
    (folder / "broken.py").write_text("import numpyro\ndef model(:\n    pass\n")
    (folder / "schools.py").write_text(EIGHT_SCHOOLS_FILE)
    (folder / "corrupt.nc").write_bytes(b"\x89HDF\r\n\x1a\nnot really a netCDF file")
    return folder


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_no_traceback(case, bad_files, env):
    args, expected = BAD_INPUTS[case]
    result = inferax_cli(*args, env=env, cwd=bad_files)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("inferax: error:") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(bad_files, env):
    result = inferax_cli("--debug", "run", "broken.py", env=env, cwd=bad_files)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "SyntaxError" in result.stderr


def test_samplers_are_found_by_name_and_their_settings_checked():
    from inferax import cli

    assert {"nuts", "hmc", "mala", "ula"} <= set(cli.sampler_names())
    with pytest.raises(cli.CLIError, match="mala needs step_size: pass --step-size X"):
        cli._make_kernel("mala", None, {})
    with pytest.raises(cli.CLIError, match="nuts has no setting bogus"):
        cli._make_kernel("nuts", None, cli._parse_settings(["bogus=1"]))
    kernel = cli._make_kernel("hmc", None, cli._parse_settings(["num_integration_steps=4"]))
    assert kernel.num_integration_steps == 4


def test_replacing_a_run_deletes_only_what_the_run_wrote(tmp_path):
    from inferax import checkpoint

    run_dir = tmp_path / "checkpoint"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(checkpoint.CheckpointError, match="holds no inferax run"):
        checkpoint.clear_for_new_run(run_dir, force=True)
    for name in ("manifest.json", "state-000001.npz", "draws-00000000-00000010.nc"):
        (run_dir / name).write_text("{}")
    with pytest.raises(checkpoint.CheckpointError, match="replace it with --force"):
        checkpoint.clear_for_new_run(run_dir, force=False)
    checkpoint.clear_for_new_run(run_dir, force=True)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]
    with pytest.raises(checkpoint.CheckpointError, match="holds no inferax run"):
        checkpoint.remove_run(run_dir)
