"""Every number of runyard.toml and service.toml has a range; a value outside it (NaN and infinity
included) is one line naming the file, the key path and the range, at load and at reload."""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest
from daemonkit import SLEEPER, build_tree, daemon_refuses, short_root

from runyard.protocol.errors import RemoteError
from runyard.runtime.config.project import load_service_template, parse_project
from runyard.runtime.config.supervision import RANGES, Backoff, Supervision
from runyard.runtime.core.errors import ProjectError


@pytest.mark.parametrize(
    ("toml", "where", "problem"),
    [
        ("[services.web]\nstop_timeout = nan", "services.web.stop_timeout", "0 to 3600, got nan"),
        ("[services.web]\nstop_timeout = inf", "services.web.stop_timeout", "0 to 3600, got inf"),
        ("[services.web]\nstop_timeout = 3601", "services.web.stop_timeout", "0 to 3600"),
        ("[services.web]\nlog_backups = 1e9", "services.web.log_backups", "0 to 1000"),
        ("[services.web]\nlog_backups = 1000000000", "services.web.log_backups", "0 to 1000"),
        ("[services.web]\nbackoff = { jitter = nan }", "services.web.backoff.jitter", "0 to 1"),
        ("[services.web]\nstart_secs = -inf", "services.web.start_secs", "0 to 3600"),
        ("[daemon]\nhealth_port = 70000", "daemon.health_port", "1 to 65535"),
    ],
)
def test_config_number_out_of_range_is_one_line_with_file_key_and_range(
    toml: str, where: str, problem: str
) -> None:
    with pytest.raises(ProjectError) as info:
        parse_project(tomllib.loads(toml), Path("/p/runyard.toml"))
    text = str(info.value)
    assert text.startswith(f"/p/runyard.toml: {where}: expected "), text
    assert problem in text and "\n" not in text


def test_service_toml_nan_stop_timeout_names_the_template_file(tmp_path: Path) -> None:
    path = tmp_path / "service.toml"
    path.write_text("stop_timeout = nan\n")
    with pytest.raises(ProjectError, match=rf"^{path}: stop_timeout: expected a number from 0"):
        load_service_template(path)


def test_every_supervision_number_has_both_bounds() -> None:
    """A float bounded on both sides refuses NaN and infinity; a new number must get a range."""
    for struct in (Supervision, Backoff):
        for f in msgspec.structs.fields(struct):
            if f.name in ("backoff", "depends_on", "readiness", "args", "log_mode"):
                # log_mode is an octal int or string; parse_log_mode bounds it (0o600-0o777)
                continue
            info = msgspec.inspect.type_info(f.type)
            types = getattr(info, "types", (info,))
            for t in types:
                if isinstance(t, msgspec.inspect.IntType | msgspec.inspect.FloatType):
                    assert t.ge is not None and t.le is not None, f.name
                    assert (t.ge, t.le) == RANGES[f.name]


@pytest.mark.timeout(120)
def test_reload_with_out_of_range_value_changes_nothing_and_says_why(daemons) -> None:
    root = short_root()
    tree = build_tree(root, {"web": SLEEPER}, "[services.web]\nstop_timeout = 5\n")
    project = root.parent / "runyard.toml"
    d = daemons(tree).start()
    with d.client() as c:
        before = c.status(["web"]).services[0]
    project.write_text(f'root = "{root.name}"\n[services.web]\nstop_timeout = nan\n')
    with d.client() as c, pytest.raises(RemoteError) as info:
        c.reload()
    assert f"{project}: services.web.stop_timeout: expected a number from 0 to 3600, got nan" in (
        str(info.value)
    )
    with d.client() as c:
        after = c.status(["web"]).services[0]
    assert (after.pid, after.state) == (before.pid, before.state)
    # At start the same file is refused with the same one line.
    d.stop()
    line = daemon_refuses(root, project)
    assert "services.web.stop_timeout: expected a number from 0 to 3600, got nan" in line


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("interval", float("nan"), "from 0.01 to 3600, got nan"),
        ("interval", 1e9, "from 0.01 to 3600"),
        ("timeout", float("inf"), "from 0.01 to 3600, got inf"),
        ("threshold", 10**9, "from 1 to 1000"),
    ],
)
def test_readiness_probe_numbers_have_ranges(key: str, value: object, problem: str) -> None:
    from runyard.daemon.readiness import parse_readiness
    from runyard.runtime.config.supervision import SupervisionError

    table = {"kind": "tcp", "port": 8080, key: value}
    with pytest.raises(SupervisionError) as info:
        parse_readiness(table, {}, "runyard.toml: services.web.readiness")
    assert str(info.value).startswith(f"runyard.toml: services.web.readiness.{key}: expected")
    assert problem in str(info.value)


def test_bad_probe_in_service_toml_names_service_toml(root: Path) -> None:
    from runyard.daemon.spec import ConfigError, load_specs
    from runyard.runtime.config.project import load_project

    tree = build_tree(root, {"web": SLEEPER})
    template = tree.config_dir / "web" / "service.toml"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text('[readiness]\nkind = "tcp"\nport = 8080\ninterval = nan\n')
    project = load_project(root.parent / "runyard.toml")
    with pytest.raises(ConfigError) as info:
        load_specs(tree, project)
    assert str(info.value).startswith(f"{template}: readiness.interval: expected a number")
