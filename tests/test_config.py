"""The config schema and its validation: one list of keys, one-line errors that name the key."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from gdexp.config import CONFIG_DIR, GROUPS, ConfigError, validate
from gdexp.config._errors import explain


@pytest.mark.parametrize(("group", "option"), [(g, o) for g, options in GROUPS.items()
                                               for o in options if g not in ("sweep", "lr_range")])
def test_every_yaml_option_sets_exactly_the_keys_of_its_schema(make_cfg, group: str, option: str) -> None:
    """The schema is the one list of keys; the YAML files give every one of them its default."""
    cfg = make_cfg(f"{group}={option}")
    node = cfg[group]
    assert list(node) == [f.name for f in fields(GROUPS[group][option])]
    missing = [k for k in node if OmegaConf.is_missing(node, k)]
    assert missing == (["path"] if option == "file" else [])


@pytest.mark.parametrize("overlay", ["lr", "regimes", "lr_range"])
def test_the_sweep_overlays_are_typed_by_their_schema(make_cfg, overlay: str) -> None:
    cfg = make_cfg(f"+sweep={overlay}")
    validate(cfg)
    package = "lr_range" if overlay == "lr_range" else "sweep"
    assert OmegaConf.get_type(cfg, package) is GROUPS[package]["default"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim.lr=-1"], "optim.lr=-1.0 is not allowed: it must be a number > 0.0"),
    (["optim=adam", "optim.betas=[0.9,1.5]"], "optim.betas=[0.9, 1.5] is not allowed: give two numbers in [0, 1)"),
    (["optim.nesterov=true"], "optim.nesterov=true needs optim.momentum > 0"),
    (["gd=minibatch", "gd.batch_size=0"], "gd.batch_size=0 is not allowed: it must be an integer >= 1"),
    (["gd=batch", "gd.batch_size=4"], "with gd=batch: it must be null"),
    (["train.threads=many"], "train.threads='many' is not allowed: it must be an integer >= 1 and <= 1024 (or auto)"),
    (["tracking.uri=ftp://x"], "tracking.uri='ftp://x' is not allowed"),
    (["data.task=${oops}"], "data.task cannot be resolved: Interpolation key 'oops' not found"),
    (["+sweep=lr", "sweep.name=../up"], "sweep.name='../up' is not allowed"),
    (["+sweep=lr", "sweep.name=a/b"], "letters, digits, '_', '.' or '-'"),
    (["+sweep=lr", "sweep.name='a\nb'"], "letters, digits, '_', '.' or '-'"),
    (["+sweep=lr", "sweep.sampler=annealing"], "sweep.sampler='annealing' is not allowed: choose one of tpe"),
    (["+sweep=lr", "tracking.enabled=false"], "tracking.enabled=false is not allowed in a sweep"),
    (["+sweep=lr", "sweep.launcher=slurm"], "sweep.launcher='slurm' is not allowed: choose one of local, ray"),
    (["+sweep=lr", "sweep.ray.cpus_per_worker=0"], "sweep.ray.cpus_per_worker=0.0 is not allowed: it must be a "
                                                    "number > 0.0"),
    (["+sweep=lr", "sweep.ray.address=http://head"], "sweep.ray.address='http://head' is not allowed: give null"),
    (["+sweep=lr_range", "lr_range.min_lr=10", "lr_range.max_lr=1"], "need 0 < min_lr < max_lr"),
    (["+sweep=lr_range", "lr_range.smoothing=1"], "lr_range.smoothing=1.0 is not allowed"),
    (["+trian.epochs=5"], "trian is not a key of gdexp's config: its keys are data, model"),
    (["+optim.moment=0.9"], "optim.moment is not a key of optim=sgd: its keys are dampening, lr, momentum"),
])
def test_bad_values_give_one_line_naming_the_key(make_cfg, overrides: list[str], message: str) -> None:
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim.lr=abc"], "optim.lr='abc' is not allowed: it must be a number > 0.0"),
    (["optim.lrr=1"], "optim.lrr is not a key of optim: its keys are"),
    (["foo=1"], "foo is not a key of gdexp's config"),
    (["optim=adamw"], "optim=adamw is not an option of optim: choose one of adagrad, adam, rmsprop, sgd "
                      "(did you mean adam?)"),
    (["+sweep=bogus"], "sweep=bogus is not an option of sweep: choose one of eos, landscape, lr, lr_range, regimes"),
    (["train.epochs=[1"], "cannot read the override 'train.epochs=[1'"),
    (["+sweep=lr", "sweep.ray.adress=auto"], "sweep.ray.adress is not a key of sweep.ray: its keys are"),
])
def test_hydras_own_errors_are_said_in_one_line(make_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(Exception) as caught:
        make_cfg(*overrides)
    explained = explain(caught.value, CONFIG_DIR)
    assert explained is not None and message in str(explained) and "\n" not in str(explained)


KEYS = sorted({f"{group}.{f.name}" for group, options in GROUPS.items() if group not in ("sweep", "lr_range")
               for schema in options.values() for f in fields(schema)})
TYPOS = ["optim.lrr", "trian.epochs", "model.hiden_size", "foo", "gd.batchsize", "data.val_frac", "+optim.moment",
         "~train.epochs", "optim", "gd", "data", "+sweep", "sweep.n_trials", "hydra.run.dir"]
VALUES = st.one_of(st.sampled_from(["abc", "-1", "0", "1e400", "nan", "inf", "-inf", "[1,2", "{a:", "null", "true",
                                    "2.5", "1e-300", "''", "bogus", "choice(1,2)", "interval(0,1)", "${oops}",
                                    "\\x00", "a b", "--", "=", "@", "%", "\u00e9", "1" * 40]),
                   st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12))


@pytest.mark.slow  # 150 compositions by Hydra: a minute or two on a busy 2-core machine
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.sampled_from(KEYS), st.sampled_from(TYPOS)), value=VALUES,
       sweep=st.sampled_from([(), ("+sweep=lr",), ("+sweep=lr_range",)]))
def test_random_command_lines_are_accepted_or_refused_in_one_line(make_cfg, key: str, value: str, sweep) -> None:
    """150 random `key=value` command lines (real keys, typos, removals, malformed values), composed as Hydra
    composes them and validated: each is accepted, or refused with one `ConfigError` line -- never another
    exception (which would reach the user as a traceback)."""
    try:
        validate(make_cfg(*sweep, f"{key}={value}"))
    except ConfigError as exc:
        assert "\n" not in str(exc)
    except Exception as exc:  # Hydra's own: gdexp says it in one line
        explained = explain(exc, CONFIG_DIR)
        assert explained is not None, f"{type(exc).__name__}: {exc}"
        assert "\n" not in str(explained)


def _refused(args: list[str]) -> bool:
    """Does composing and validating `args` refuse them (so that running them trains nothing)?"""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        try:
            validate(compose("config", overrides=args))
        except Exception:
            return True
    return False


@pytest.mark.slow  # 100 runs of the command's own entry point
@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.sampled_from(KEYS), st.sampled_from(TYPOS)), value=VALUES,
       sweep=st.sampled_from([(), ("+sweep=lr",), ("+sweep=lr_range",)]))
def test_bad_command_lines_end_in_one_line_with_exit_code_2_leaving_nothing(
        project, installed, capsys, monkeypatch, key: str, value: str, sweep) -> None:
    """`python -m gdexp`'s own `main()` on 100 random refused command lines: exit code 2, one line on stderr
    and nothing on stdout, no folder or file added in the working folder. (In this process, as the command
    runs it: a child process per line would take minutes.)"""
    from gdexp import __main__ as command

    args = [*sweep, f"{key}={value}"]
    if not _refused(args):
        return  # accepted: it would train; the tests of training cover it
    monkeypatch.setattr(command.stopping, "spare_exit_collection", lambda: None)  # pytest's process goes on
    monkeypatch.setattr("sys.argv", ["gdexp", *args])
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    with pytest.raises(SystemExit) as ended:
        command.main()
    out, err = capsys.readouterr()
    assert ended.value.code == 2, (args, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("gdexp: ") and not out.strip(), (args, err)
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before, args
