"""The config schema and its validation: one list of keys, one-line errors that name the key."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from gdexp.config import CONFIG_DIR, GROUPS, ConfigError, check_overrides, validate
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


@pytest.mark.parametrize("overlay", sorted(p.stem for p in (CONFIG_DIR / "sweep").glob("*.yaml")))
def test_the_sweep_overlays_are_typed_by_their_schema(make_cfg, overlay: str) -> None:
    """Every overlay is typed; every sweep among them starts from what all sweeps share (conf/sweep_defaults.yaml:
    no loss_curve.png per trial, one progress bar), rather than a copy of it."""
    cfg = make_cfg(f"+sweep={overlay}")
    validate(cfg)
    package = "lr_range" if overlay == "lr_range" else "sweep"
    assert OmegaConf.get_type(cfg, package) is GROUPS[package]["default"]
    if package == "sweep":
        assert "sweep_defaults" in (CONFIG_DIR / "sweep" / f"{overlay}.yaml").read_text()
        assert not cfg.tracking.loss_curve and not cfg.train.progress


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim.lr=-1"], "optim.lr=-1.0 is not allowed: it must be a number > 0.0"),
    (["optim=adam", "optim.betas=[0.9,1.5]"], "optim.betas=[0.9, 1.5] is not allowed: give two numbers in [0, 1)"),
    (["optim=adam", "optim.betas=[0.9]"], "optim.betas=[0.9] is not allowed: give two numbers in [0, 1)"),
    (["optim=adam", "optim.betas=[0.9,0.99,0.5]"], "optim.betas=[0.9, 0.99, 0.5] is not allowed: give two numbers"),
    (["optim=rmsprop", "optim.eps=1e-50"], "optim.eps=1e-50 is not allowed with train.dtype=float32: it rounds to 0"),
    (["optim.nesterov=true"], "optim.nesterov=true is not allowed: it needs momentum > 0"),
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
    # every number is bounded, and what would not fit in memory is refused with the estimate, before allocating
    # (the estimates below are terabytes: more than any machine this runs on has free)
    (["+sweep=lr", f"sweep.name={'a' * 300}"], "give 1 to 100 letters"),
    (["train.epochs=1000000000000"], "train.epochs=1000000000000 is not allowed: it must be an integer >= 1 and <="),
    (["train.epochs=1000000000"], "this run needs about"),
    (["model.hidden_size=65536", "model.hidden_layers=30"], "most of it for the weights, gradients and optimizer"),
    (["data=linear", "data.n=1000000000000"], "data.n=1000000000000 is not allowed"),
    (["data=linear", "data.n=1000000000", "data.d=1000"], "most of it for the data set"),
    (["data=linear", "data.d=1000000000"], "data.d=1000000000 is not allowed"),
    (["data=linear", "data.n=100000", "data.d=10000000"], "this run needs about"),
    (["+sweep=lr", "sweep.n_workers=1000000000"], "sweep.n_workers=1000000000 is not allowed"),
    (["+sweep=lr", "sweep.heartbeat_s=100000000000000"], "sweep.heartbeat_s=100000000000000 is not allowed"),
    (["+sweep=lr", "sweep.storage=postgresql://"], "sweep.storage='postgresql://' is not allowed"),
    (["+sweep=lr", "sweep.storage=5"], "sweep.storage='5' is not allowed"),
    (["+sweep=lr", "sweep.storage=redis://"], "sweep.storage='redis://' is not allowed"),
    (["tracking.experiment=''"], "tracking.experiment='' is not allowed"),
])
def test_bad_values_give_one_line_naming_the_key(make_cfg, overrides: list[str], message: str) -> None:
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("storage", ["postgresql://postgres@127.0.0.1/test", "postgresql://postgres@/test?host=/run/pg",
                                     "sqlite:///sweeps/x.db", "redis://127.0.0.1:6379/0", "sweeps/lr/study.journal"])
def test_storages_that_name_their_database_are_accepted(make_cfg, storage: str) -> None:
    """A Unix socket names its server by libpq's `host=` parameter."""
    validate(make_cfg("+sweep=lr", f"sweep.storage='{storage}'"))


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim.lr=abc"], "optim.lr='abc' is not allowed: it must be a number > 0.0"),
    (["gd.batch_size=abc"], "gd.batch_size='abc' is not allowed: it must be a whole number"),  # its rule: validate's
    (["optim.lrr=1"], "optim.lrr is not a key of optim=sgd: its keys are dampening, lr, momentum, name, nesterov, "
                      "weight_decay (did you mean optim.lr?)"),
    (["optim=adam", "optim.momentum=0.9"], "optim.momentum is not a key of optim=adam: its keys are amsgrad, betas"),
    (["optim.alpha=0.5"], "optim.alpha is not a key of optim=sgd: its keys are dampening"),  # rmsprop's, not sgd's
    (["data=linear", "data.n_classes=3"], "data.n_classes is not a key of data=linear"),
    (["gd=batch", "gd.batchsize=3"], "gd.batchsize is not a key of gd: its keys are batch_size, shuffle, variant"),
    (["~optim.lr"], "optim.lr cannot be removed: gdexp needs it; set it instead (optim.lr=...)"),
    (["optim=adam", "~optim.momentum"], "~optim.momentum removes nothing: optim.momentum is not in the config"),
    (["~sweep.params"], "sweep.params needs a sweep, which is added with a +: write +sweep=lr"),
    (["+sweep=lr", "~sweep.params"], "sweep.params cannot be removed"),
    (["+sweep=lr", "sweep.params.optim.momentum=1"], "is not in the config yet: add it with a + (+sweep.params.optim"),
    (["foo=1"], "foo is not a key of gdexp's config"),
    (["optim=adamw"], "optim=adamw is not an option of optim: choose one of adagrad, adam, rmsprop, sgd "
                      "(did you mean adam?)"),
    (["+sweep=bogus"], "sweep=bogus is not an option of sweep: choose one of eos, landscape, lr, lr_range, regimes"),
    (["train.epochs=[1"], "cannot read the override 'train.epochs=[1'"),
    (["+sweep=lr", "sweep.ray.adress=auto"], "sweep.ray.adress is not a key of sweep.ray: its keys are"),
    (["sweep=lr"], "a sweep is added with a +: write +sweep=lr, not sweep=lr"),
    (["sweep.n_trials=3"], "sweep.n_trials needs a sweep, which is added with a +: write +sweep=lr"),
    (["lr_range=default"], "lr_range is in the config only with the sweep that adds it, with a +: +sweep=lr_range"),
    (["+sweep=lr_range", "sweep.n_trials=3"], "sweep.n_trials is a key of the Optuna sweeps (+sweep=eos, "
     "+sweep=landscape, +sweep=lr, +sweep=regimes), and +sweep=lr_range adds no sweep.* key: its keys are lr_range.*"),
    (["~train", "train.epochs=1"], "train cannot be removed (~train): gdexp needs it"),
    (["optim.lr=1e-3,1e-2"], "optim.lr=1e-3,1e-2 gives several values, which one run cannot take: add -m for a run "
                             "per value (python -m gdexp -m optim.lr=1e-3,1e-2), or search them with an Optuna sweep"),
    (["+sweep=lr", "sweep.params.optim.lr=tag(log, interval(0.3, 100))"],
     "sweep.params.optim.lr=tag(log, interval(0.3, 100)): a search space is a string, quoted twice on the command "
     "line: 'sweep.params.optim.lr=\"tag(log, interval(0.3, 100))\"'"),
    (["optim.lr=interval(0,1)"], "optim.lr=interval(0,1) gives several values, which one run cannot take: search "
                                 "them with an Optuna sweep"),
])
def test_hydras_own_errors_are_said_in_one_line(make_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(Exception) as caught:
        make_cfg(*overrides)
    explained = explain(caught.value, CONFIG_DIR, overrides)
    assert explained is not None and message in str(explained) and "\n" not in str(explained)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.standardize=2"], "data.standardize=2 is not allowed: it must be true or false"),
    (["train.progress=yes"], "train.progress=yes is not allowed: it must be true or false"),
    (["~train"], "train cannot be removed (~train): gdexp needs it"),
    (["~optim"], "optim cannot be removed"),
])
def test_what_composing_hides_is_refused_from_the_overrides(overrides: list[str], message: str) -> None:
    """OmegaConf reads `data.standardize=2` as true and Hydra composes `~train` into a config without training:
    the command line itself is checked."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_overrides(overrides)


@pytest.mark.parametrize(("key", "words"), [
    ("optim.momentumm", "optim.momentumm is not a key of the config (nor a config group): the keys of optim are "
                        "name, lr, weight_decay, momentum, dampening, nesterov (did you mean momentum?)"),
    ("optimm.lr", "optimm.lr is not a key of the config (nor a config group) (did you mean optim?)"),
])
def test_a_search_space_key_typo_gets_the_keys_and_a_close_match(make_cfg, key: str, words: str) -> None:
    """As a typo of a config key on the command line is told (`optim.lrr`): the node's keys and the nearest."""
    from gdexp.sweep import validate_sweep

    cfg = make_cfg("+sweep=lr")
    cfg.sweep.params = {key: "interval(0, 0.9)"}
    with pytest.raises(ConfigError, match=re.escape(f"sweep.params.{key}: {words}")):
        validate_sweep(cfg)


def test_a_search_space_of_the_wrong_type_is_refused_naming_the_key(make_cfg) -> None:
    from gdexp.sweep import validate_sweep

    cfg = make_cfg("+sweep=lr")
    cfg.sweep.params = {"optim.lr": "choice(a, b)"}
    with pytest.raises(ConfigError, match=r"sweep.params.optim.lr reaches 'a', which is not allowed: optim.lr='a'"):
        validate_sweep(cfg)


KEYS = sorted({f"{group}.{f.name}" for group, options in GROUPS.items() if group not in ("sweep", "lr_range")
               for schema in options.values() for f in fields(schema)})
TYPOS = ["optim.lrr", "trian.epochs", "model.hiden_size", "foo", "gd.batchsize", "data.val_frac", "+optim.moment",
         "~train.epochs", "optim", "gd", "data", "+sweep", "sweep.n_trials", "hydra.run.dir"]
VALUES = st.one_of(st.sampled_from(["abc", "-1", "0", "1e400", "nan", "inf", "-inf", "[1,2", "{a:", "null", "true",
                                    "2.5", "1e-300", "''", "bogus", "choice(1,2)", "interval(0,1)", "${oops}",
                                    "\\x00", "a b", "--", "=", "@", "%", "\u00e9", "1" * 40]),
                   st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12))


@pytest.mark.slow  # 200 runs of the command's own entry point
@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.sampled_from(KEYS), st.sampled_from(TYPOS)), value=VALUES,
       sweep=st.sampled_from([(), ("+sweep=lr",), ("+sweep=lr_range",)]))
def test_bad_command_lines_end_in_one_line_with_exit_code_2_leaving_nothing(
        project, installed, capsys, monkeypatch, key: str, value: str, sweep) -> None:
    """`python -m gdexp`'s own `main()` on 200 random command lines, each through Hydra's composition and every
    check the command makes; one it accepts is stopped where the work would start (a sweep's workers, the range
    test, the single run: their own tests run them). Each refused one: exit code 2, one line on stderr and
    nothing on stdout, no folder or file added in the working folder. (In this process, as the command runs it:
    a child process per line would take minutes.)"""
    from gdexp import __main__ as command
    from gdexp import lr_range
    from gdexp import sweep as sweeping

    started: list[str] = []

    def start(what: str) -> Callable[..., None]:
        def here(*_args: object, **_kwargs: object) -> None:
            started.append(what)
            raise SystemExit(0)
        return here

    monkeypatch.setattr(sweeping, "launcher", lambda cfg: start("sweep"))  # after the sweep's own checks
    monkeypatch.setattr(lr_range, "run", start("lr_range"))
    monkeypatch.setattr(command, "single", start("single"))
    monkeypatch.setattr(command.stopping, "spare_exit_collection", lambda: None)  # pytest's process goes on
    args = [*sweep, f"{key}={value}"]
    monkeypatch.setattr("sys.argv", ["gdexp", *args])
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    with pytest.raises(SystemExit) as ended:
        command.main()
    out, err = capsys.readouterr()
    event("accepted" if started else "refused")  # pytest --hypothesis-show-statistics counts them
    if started:
        assert ended.value.code == 0 and "Traceback" not in err, (args, err)
        return
    assert ended.value.code == 2, (args, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("gdexp: ") and not out.strip(), (args, err)
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before, args


def test_a_refused_command_keeps_the_users_own_files_in_its_output_folder(project, installed, capsys,
                                                                         monkeypatch) -> None:
    """`hydra.run.dir=logs`, a folder of the user's: a refused command removes only the empty log file Hydra made
    for it, not the user's logs, nor an earlier run's log it would have appended to. (Once every *.log there and
    the folder went.)"""
    from gdexp import __main__ as command

    monkeypatch.setattr(command.stopping, "spare_exit_collection", lambda: None)
    logs = project / "logs"
    logs.mkdir()
    (logs / "notes.log").write_text("the user's\n")
    for argv in (["hydra.run.dir=logs", "gd.batch_size=0"], ["hydra.run.dir=new/logs", "gd.batch_size=0"]):
        monkeypatch.setattr("sys.argv", ["gdexp", *argv])
        with pytest.raises(SystemExit) as ended:
            command.main()
        assert ended.value.code == 2 and "gd.batch_size=0" in capsys.readouterr().err
    assert sorted(p.name for p in logs.iterdir()) == ["notes.log"] and not (project / "new").exists()
    (logs / "__main__.log").write_text("an earlier run's lines\n")
    with pytest.raises(SystemExit):
        command.main()
    assert (logs / "__main__.log").read_text() == "an earlier run's lines\n" and (logs / "notes.log").exists()
    # what the user made empty stays: a folder, one inside a folder of theirs, an earlier run's empty log
    (project / "emptydir").mkdir()
    (project / "a" / "b").mkdir(parents=True)
    (project / "a" / "keep.txt").write_text("")
    (logs / "__main__.log").write_text("")
    for run_dir in ("emptydir", "a/b", "logs"):
        monkeypatch.setattr("sys.argv", ["gdexp", f"hydra.run.dir={run_dir}", "gd.batch_size=0"])
        with pytest.raises(SystemExit):
            command.main()
    assert (project / "emptydir").is_dir() and (project / "a" / "b").is_dir() and (logs / "__main__.log").exists()
    assert list((project / "emptydir").iterdir()) == [] == list((project / "a" / "b").iterdir())


@pytest.mark.parametrize("help_flag", [[], ["--help"]])
def test_a_config_folder_that_is_not_there_is_one_line(project, installed, capsys, monkeypatch,
                                                        help_flag: list[str]) -> None:
    """`-cd nonexist`: Hydra's SearchPathException, said in one line with exit code 2 (once an internal error with a
    traceback; with --help, nothing said at all)."""
    from gdexp import __main__ as command

    monkeypatch.setattr(command.stopping, "spare_exit_collection", lambda: None)
    monkeypatch.setattr("sys.argv", ["gdexp", "-cd", "nonexist", "train.epochs=1", *help_flag])
    with pytest.raises(SystemExit) as ended:
        command.main()
    out, err = capsys.readouterr()
    assert ended.value.code == 2 and not out, (out, err)
    assert err.startswith("gdexp: config error: --config-dir: Additional config directory '") and \
        err.endswith("nonexist' not found (give a folder of config files)\n"), err


def test_two_modes_at_once_are_a_usage_error_not_a_bug(project, installed, capsys, monkeypatch) -> None:
    """`-m optim.lr=0.1 --cfg job`: Hydra's plain ValueError for flags of two modes was "internal error (a bug in
    gdexp, please report it)" after a traceback; it is the user's command line, said in one line."""
    from gdexp import __main__ as command

    monkeypatch.setattr(command.stopping, "spare_exit_collection", lambda: None)
    monkeypatch.setattr("sys.argv", ["gdexp", "-m", "optim.lr=0.1", "--cfg", "job"])
    with pytest.raises(SystemExit) as ended:
        command.main()
    out, err = capsys.readouterr()
    assert ended.value.code == 2 and not out and len(err.splitlines()) == 1, (out, err)
    assert err.startswith("gdexp: config error: Only one of --run, --multirun, --cfg") and "leave out -m" in err
    assert list(project.iterdir()) == [project / "mlruns"], "nothing made"


def test_a_sweep_key_beside_a_swept_overlay_is_told_how_to_write_it(project, installed, capsys, monkeypatch) -> None:
    """`-m +sweep=lr,regimes sweep.name=x`: Hydra composes the multirun's shared config without the swept overlay,
    so `sweep.name` is not there; the line said "write +sweep=lr", which the user had. `++` is what works."""
    from gdexp import __main__ as command

    monkeypatch.setattr(command.stopping, "spare_exit_collection", lambda: None)
    for key, fix in (("sweep.name=x", "leave it out: each overlay names its own study"),
                     ("sweep.n_trials=3", "write ++sweep.n_trials=3")):
        monkeypatch.setattr("sys.argv", ["gdexp", "-m", "+sweep=lr,regimes", key])
        with pytest.raises(SystemExit) as ended:
            command.main()
        out, err = capsys.readouterr()
        assert ended.value.code == 2 and not out and len(err.splitlines()) == 1, (out, err)
        assert f"{key} cannot be set beside a swept +sweep=lr,regimes" in err and fix in err, err


def test_hydras_own_keys_that_do_not_resolve_are_named(project, installed, capsys, monkeypatch) -> None:
    """Hydra resolves `hydra.run.dir` itself, before the job and gdexp's validation: a `${...}` there that names no
    key is a config error naming it (once an internal error with a traceback, found by the fuzz test above)."""
    from gdexp import __main__ as command

    monkeypatch.setattr(command.stopping, "spare_exit_collection", lambda: None)
    monkeypatch.setattr("sys.argv", ["gdexp", "hydra.run.dir=${oops}"])
    before = sorted(project.rglob("*"))
    with pytest.raises(SystemExit) as ended:
        command.main()
    out, err = capsys.readouterr()
    assert ended.value.code == 2 and not out and sorted(project.rglob("*")) == before
    assert err == "gdexp: config error: hydra.run.dir cannot be resolved: Interpolation key 'oops' not found\n"


@pytest.mark.parametrize("overrides,named", [
    (["sweep.storage=postgresql://u:pw@db/study"], "sweep.storage holds a password"),
    (["+sweep=lr", "tracking.uri=https://u:pw@host:5000", "sweep.storage=postgresql://u:pw@db/s"],
     "tracking.uri and sweep.storage hold a password"),
    (["++tracking.uri=http://host:5000/?token=abc"], "tracking.uri holds a password"),
    (["sweep.storage=postgresql://u@db/study", "tracking.uri=http://host:5000", "data.path=a:b@c"], None),
])
def test_a_password_inside_a_url_on_the_command_line_is_warned_of(overrides: list[str], named: str | None) -> None:
    """One warning for the command, naming the keys; where else the password can come from."""
    from gdexp.config import password_warning

    warning = password_warning(overrides)
    if named is None:
        assert warning is None
        return
    assert warning is not None and warning.startswith(f"warning: {named} on the command line, where `ps` shows it")
    assert "PGPASSFILE" in warning and "MLFLOW_TRACKING_PASSWORD" in warning and "pw" not in warning.split(":", 1)[0]


def test_help_lists_the_groups_a_user_chooses_and_the_composed_config(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` as Hydra's template lays it out, with the overrides given, and no `schema/...` group."""
    from gdexp.__main__ import app_help

    app_help(["optim=adam", "+sweep=lr"])
    out = capsys.readouterr().out
    assert out.startswith("gdexp: train a NumPy MLP") and "== Configuration groups ==" in out
    assert "optim: adagrad, adam, rmsprop, sgd\n" in out and "sweep: eos, landscape, lr, lr_range, regimes\n" in out
    assert "schema/" not in out
    assert "optim:\n  name: adam\n" in out and "n_trials: 30" in out and "hydra:" not in out


@pytest.mark.parametrize("args", [["--config-dir", "myconf", "optim=sgdm"], ["-cd=myconf", "optim=sgdm"],
                                  ["hydra.searchpath=[file://myconf]", "optim=sgdm"]])
def test_help_composes_as_the_command_does_with_a_users_config_folder(project, capsys, args: list[str]) -> None:
    """`--config-dir`, `hydra.searchpath`: `--help` shows the user's options and composes with them, as the command
    runs with them (once it refused `optim=sgdm`, or read the folder's name as an override); `--config-name` picks
    the user's primary config."""
    from gdexp.__main__ import app_help

    (project / "myconf" / "optim").mkdir(parents=True)
    (project / "myconf" / "optim" / "sgdm.yaml").write_text("defaults:\n  - sgd\n  - _self_\nmomentum: 0.9\n")
    (project / "myconf" / "myexp.yaml").write_text("defaults:\n  - config\n  - _self_\ntrain:\n  epochs: 2\n")
    app_help([*args, "--help"])
    out = capsys.readouterr().out
    assert "optim: adagrad, adam, rmsprop, sgd, sgdm\n" in out and "  momentum: 0.9\n" in out
    app_help(["-cd", "myconf", "--config-name", "myexp", "--help"])
    assert "  epochs: 2\n" in capsys.readouterr().out


def test_help_prints_no_password_given_on_the_command_line(project, capsys) -> None:
    """`--help` shows the config the command line composes: the storage's and the store's passwords masked, as
    everything gdexp prints (it printed them back)."""
    from gdexp.__main__ import app_help

    app_help(["+sweep=lr", "sweep.storage=postgresql://u:secret-pw@127.0.0.1:5499/x",
              "tracking.uri=http://a:other-pw@127.0.0.1:1", "--help"])
    out = capsys.readouterr().out
    assert "storage: postgresql://u:***@127.0.0.1:5499/x\n" in out and "uri: http://a:***@127.0.0.1:1\n" in out
    assert "secret-pw" not in out and "other-pw" not in out
