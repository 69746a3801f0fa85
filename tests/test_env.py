"""runtime.config.project (runyard.toml) and runtime.config.env (the merged, scoped environment of a service)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.runtime.config.env import resolve_service_env, select_entry, service_env
from runyard.runtime.config.project import (
    Project,
    ProjectService,
    load_project,
    load_user_config,
    project_root,
)
from runyard.runtime.core.errors import ProjectError, ResolveError
from runyard.runtime.core.manifest import (
    PortDef,
    RuntimeManifest,
    ServiceEntry,
    init_tree,
    load_manifest,
    save_manifest,
)
from runyard.runtime.core.platform import current_arch, current_os
from runyard.runtime.core.tree import RuntimeTree

OTHER_OS = "darwin" if current_os() != "darwin" else "linux"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real user config, no real project file, no RUNYARD_ROOT from the caller."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RUNYARD_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)


def add_entry(
    tree: RuntimeTree,
    manifest: RuntimeManifest,
    name: str,
    version: str,
    *,
    installed_at: str = "2024-01-01T00:00:00Z",
    os_name: str | None = None,
    env: dict[str, str] | None = None,
    ports: dict[str, int] | None = None,
    bin_at_top: bool = False,
) -> ServiceEntry:
    """Install a fake binary under the tree and list it in ``manifest`` (not saved)."""
    os_name = os_name or current_os()
    install = tree.install_dir(name, version, os_name, current_arch())
    rel_install = install.relative_to(tree.root).as_posix()
    if bin_at_top:  # binary at the top of the install dir, plus a separate bin/ dir
        (install / "bin").mkdir(parents=True)
        rel = f"{rel_install}/{name}"
    else:
        (install / "bin").mkdir(parents=True)
        rel = f"{rel_install}/bin/{name}"
    binary = tree.root / rel
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    entry = ServiceEntry(
        name=name,
        version=version,
        os=os_name,
        arch=current_arch(),
        checksum="a" * 64,
        size=10,
        bin_path=rel,
        default_ports=[PortDef(name=k, port=v) for k, v in (ports or {}).items()],
        env=env or {},
        installed_at=installed_at,
    )
    manifest.services.append(entry)
    return entry


def install(tree: RuntimeTree, *specs: tuple[str, str], **kw: object) -> RuntimeManifest:
    manifest = load_manifest(tree)
    for name, version in specs:
        add_entry(tree, manifest, name, version, **kw)  # type: ignore[arg-type]
    save_manifest(tree, manifest)
    return manifest


def write_project(path: Path, text: str) -> Project:
    path.write_text(text)
    return load_project(path)


def bin_dir(tree: RuntimeTree, name: str, version: str) -> str:
    return str(tree.install_dir(name, version, current_os(), current_arch()) / "bin")


# --- layer order ---------------------------------------------------------------------------------


def test_every_layer_overrides_the_previous_and_sources_say_which(
    tree: RuntimeTree, tmp_path: Path
) -> None:
    # Layer k sets X{k}..X8, so X{k} ends up with layer k's value: each layer overrode the ones
    # before it and was itself overridden by none after it.
    def sets(k: int) -> dict[str, str]:
        return {f"X{j}": f"layer{k}" for j in range(k, 9)}

    def toml(values: dict[str, str]) -> str:
        return "".join(f'{k} = "{v}"\n' for k, v in values.items())

    install(tree, ("web", "1.0.0"), env=sets(2))
    (tree.config_dir / "web").mkdir()
    (tree.config_dir / "web" / "env.toml").write_text(toml(sets(3)))
    project = write_project(
        tmp_path / "runyard.toml",
        f"[env]\n{toml(sets(4))}[services.web.env]\n{toml(sets(5))}",
    )
    user = tmp_path / "user.toml"
    user.write_text(f"[env]\n{toml(sets(6))}[services.web.env]\n{toml(sets(7))}")

    r = resolve_service_env(tree, "web", project=project, user_config=user, base=sets(1))

    assert [r.env[f"X{j}"] for j in range(1, 8)] == [f"layer{j}" for j in range(1, 8)]
    assert r.env["X8"] == "layer7"
    assert [r.sources[f"X{j}"] for j in range(1, 8)] == [
        "base",
        "manifest",
        "config/web/env.toml",
        "runyard.toml",
        "runyard.toml",
        "user",
        "user",
    ]
    assert r.service == "web" and r.version == "1.0.0"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG_CONFIG_HOME is Linux only")
def test_user_config_comes_from_xdg_config_home(tree: RuntimeTree, tmp_path: Path) -> None:
    install(tree, ("web", "1.0.0"))
    conf = tmp_path / "xdg" / "runyard"
    conf.mkdir(parents=True)
    (conf / "env.toml").write_text(
        '[env]\nA = "all"\n[services.web]\nenv = { B = "web" }\n'
        '[services.other]\nenv = { B = "other" }\n'
    )
    r = resolve_service_env(tree, "web", base={})
    assert (r.env["A"], r.env["B"]) == ("all", "web")
    assert r.sources["A"] == r.sources["B"] == "user"


def test_runyard_variables_are_stripped(tree: RuntimeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    install(tree, ("web", "1.0.0"))
    monkeypatch.setenv("RUNYARD_SOCKET", "/tmp/x.sock")
    monkeypatch.setenv("KEEP_ME", "yes")
    r = resolve_service_env(tree, "web")
    assert r.env["KEEP_ME"] == "yes"
    assert not [k for k in r.env if k.upper().startswith("RUNYARD_")]

    r = resolve_service_env(tree, "web", base={"RUNYARD_ROOT": "/x", "runyard_debug": "1"})
    assert not [k for k in r.env if k.upper().startswith("RUNYARD_")]


def test_a_layer_may_not_set_runyard_variables(tree: RuntimeTree, tmp_path: Path) -> None:
    install(tree, ("web", "1.0.0"))
    project = write_project(tmp_path / "runyard.toml", '[env]\nRUNYARD_ROOT = "/elsewhere"\n')
    with pytest.raises(ProjectError, match=r"runyard\.toml: env\.RUNYARD_ROOT: .*reserved"):
        resolve_service_env(tree, "web", project=project, base={})


def test_defaults_fill_what_is_missing(tree: RuntimeTree) -> None:
    install(tree, ("web", "1.0.0"))
    r = resolve_service_env(tree, "web", base={})
    assert r.env["LANG"] == "C.UTF-8"
    assert r.sources["LANG"] == "default"
    assert r.env["PATH"].split(os.pathsep)[len(r.path_dirs) :] == [
        p for p in os.defpath.split(os.pathsep) if p
    ]
    if sys.platform != "win32":
        import pwd

        assert r.env["HOME"] == pwd.getpwuid(os.getuid()).pw_dir
        assert r.sources["HOME"] == "default"

    r = resolve_service_env(tree, "web", base={"LC_ALL": "de_DE.UTF-8", "HOME": "/h"})
    assert "LANG" not in r.env
    assert r.env["HOME"] == "/h" and r.sources["HOME"] == "base"

    r = resolve_service_env(tree, "web", base={"LANG": "fr_FR.UTF-8"})
    assert (r.env["LANG"], r.sources["LANG"]) == ("fr_FR.UTF-8", "base")


# --- PATH ----------------------------------------------------------------------------------------


def test_path_prepends_own_and_needed_bin_dirs_without_duplicates(
    tree: RuntimeTree, tmp_path: Path
) -> None:
    manifest = load_manifest(tree)
    web = add_entry(tree, manifest, "web", "1.0.0", bin_at_top=True)
    add_entry(tree, manifest, "redis", "7.2.0")
    add_entry(tree, manifest, "other", "1.0.0")
    save_manifest(tree, manifest)
    project = write_project(tmp_path / "runyard.toml", '[services.web]\nneeds = ["redis"]\n')
    web_install = str(tree.root / web.install_rel)
    redis_bin = bin_dir(tree, "redis", "7.2.0")

    base_path = os.pathsep.join(["/usr/bin", redis_bin, "", "/bin", "/usr/bin"])
    r = resolve_service_env(tree, "web", project=project, base={"PATH": base_path})

    assert r.path_dirs == [web_install, f"{web_install}/bin", redis_bin]
    assert r.env["PATH"].split(os.pathsep) == [*r.path_dirs, "/usr/bin", "/bin"]
    assert bin_dir(tree, "other", "1.0.0") not in r.env["PATH"]

    # redis itself gets only its own dirs.
    r = resolve_service_env(tree, "redis", project=project, base={"PATH": "/bin"})
    assert r.env["PATH"].split(os.pathsep) == [redis_bin, "/bin"]


def test_needing_a_service_that_is_not_installed_fails(tree: RuntimeTree, tmp_path: Path) -> None:
    install(tree, ("web", "1.0.0"))
    project = write_project(tmp_path / "runyard.toml", '[services.web]\nneeds = ["redis"]\n')
    with pytest.raises(ResolveError, match=r"web needs redis: service 'redis' is not installed"):
        resolve_service_env(tree, "web", project=project, base={})


def test_explicit_path_in_a_layer_is_the_base(tree: RuntimeTree, tmp_path: Path) -> None:
    install(tree, ("web", "1.0.0"))
    project = write_project(
        tmp_path / "runyard.toml", '[services.web.env]\nPATH = "/custom/bin:/usr/bin"\n'
    )
    r = resolve_service_env(tree, "web", project=project, base={"PATH": "/inherited"})
    assert r.env["PATH"].split(os.pathsep) == [
        bin_dir(tree, "web", "1.0.0"),
        "/custom/bin",
        "/usr/bin",
    ]
    assert r.sources["PATH"] == "runyard.toml"

    # ${PATH} in a layer extends the PATH of the layers before.
    project = write_project(tmp_path / "runyard.toml", '[env]\nPATH = "${PATH}:/extra"\n')
    r = resolve_service_env(tree, "web", project=project, base={"PATH": "/inherited"})
    assert r.env["PATH"].split(os.pathsep) == [
        bin_dir(tree, "web", "1.0.0"),
        "/inherited",
        "/extra",
    ]


# --- which entry ---------------------------------------------------------------------------------


@pytest.fixture
def versions(tree: RuntimeTree) -> RuntimeManifest:
    manifest = load_manifest(tree)
    add_entry(tree, manifest, "web", "1.2.0", installed_at="2024-01-03T00:00:00Z")
    add_entry(tree, manifest, "web", "1.10.0", installed_at="2024-01-01T00:00:00Z")
    add_entry(tree, manifest, "web", "2.0.0", installed_at="2024-01-05T00:00:00Z")
    add_entry(tree, manifest, "web", "1.3.0", installed_at="2024-01-04T00:00:00Z")
    # Higher and newer, but for another os: never picked here.
    add_entry(
        tree, manifest, "web", "1.99.0", installed_at="2024-02-01T00:00:00Z", os_name=OTHER_OS
    )
    add_entry(tree, manifest, "db", "5.0.0", os_name=OTHER_OS)
    save_manifest(tree, manifest)
    return manifest


def test_without_pin_the_newest_install_wins(tree: RuntimeTree, versions: RuntimeManifest) -> None:
    assert select_entry(versions, "web").version == "2.0.0"
    r = resolve_service_env(tree, "web", base={})
    assert r.version == "2.0.0"
    assert r.path_dirs == [bin_dir(tree, "web", "2.0.0")]


def test_a_pin_picks_the_highest_matching_version(
    tree: RuntimeTree, versions: RuntimeManifest, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "runyard.toml", '[services.web]\nversion = "1.x"\n')
    assert select_entry(versions, "web", project).version == "1.10.0"
    r = resolve_service_env(tree, "web", project=project, base={})
    assert r.version == "1.10.0"
    assert r.env["PATH"].startswith(bin_dir(tree, "web", "1.10.0") + os.pathsep)

    exact = Project(services={"web": ProjectService(version="1.2.0")})
    assert select_entry(versions, "web", exact).version == "1.2.0"


def test_a_pin_matching_nothing_lists_installed_versions(
    versions: RuntimeManifest, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "runyard.toml", '[services.web]\nversion = "3.x"\n')
    with pytest.raises(ResolveError) as exc:
        select_entry(versions, "web", project)
    assert str(exc.value) == (
        "service 'web': no installed version matches '3.x' (installed: 1.10.0, 1.2.0, 1.3.0, 2.0.0)"
    )


def test_not_installed(versions: RuntimeManifest) -> None:
    with pytest.raises(ResolveError, match=r"^service 'nope' is not installed \(installed: web\)$"):
        select_entry(versions, "nope")
    with pytest.raises(
        ResolveError,
        match=rf"'db' is not installed for .*\(installed for: "
        rf"{OTHER_OS}-",
    ):
        select_entry(versions, "db")
    with pytest.raises(ResolveError, match=r"\(installed: none\)"):
        select_entry(RuntimeManifest(), "web")


# --- os.environ is never touched -----------------------------------------------------------------


def test_os_environ_untouched_and_every_result_is_new(
    tree: RuntimeTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tree, ("web", "1.0.0"))
    monkeypatch.setenv("RUNYARD_TOKEN", "secret")
    monkeypatch.delenv("LANG", raising=False)
    monkeypatch.delenv("LC_ALL", raising=False)
    project = write_project(
        tmp_path / "runyard.toml", '[env]\nPATH = "/p:${PATH}"\nNEW_VAR = "x"\n'
    )
    before = dict(os.environ)
    r1 = resolve_service_env(tree, "web", project=project)
    r2 = resolve_service_env(tree, "web", project=project)
    e3 = service_env("web", root=tree.root, project=project)
    assert dict(os.environ) == before
    assert r1.env is not r2.env and r1.env is not os.environ and e3 is not r1.env
    assert r1.env == r2.env == e3
    r1.env["MUTATED"] = "1"
    assert "MUTATED" not in r2.env and "MUTATED" not in os.environ
    assert "NEW_VAR" not in os.environ and os.environ["RUNYARD_TOKEN"] == "secret"


# --- expansion -----------------------------------------------------------------------------------


def test_builtins_and_ports_expand(tree: RuntimeTree, tmp_path: Path) -> None:
    install(tree, ("web", "1.4.0"), ports={"http": 8080, "admin": 9000})
    project = write_project(
        tmp_path / "runyard.toml",
        "[services.web.env]\n"
        'A = "${root}|${service}|${version}|${bin_dir}"\n'
        'B = "${data_dir}|${logs_dir}|${config_dir}"\n'
        'URL = "http://localhost:${port.http}/"\n'
        'ADMIN = "${port.admin}"\n',
    )
    r = resolve_service_env(tree, "web", project=project, base={})
    root = str(tree.root)
    install_dir = str(tree.install_dir("web", "1.4.0", current_os(), current_arch()))
    assert r.env["A"] == f"{root}|web|1.4.0|{install_dir}"
    assert r.env["B"] == f"{root}/data/web|{root}/logs/web|{root}/config/web"
    assert r.env["URL"] == "http://localhost:8080/"
    assert r.env["ADMIN"] == "9000"


def test_expansion_sees_earlier_layers_only(tree: RuntimeTree, tmp_path: Path) -> None:
    install(tree, ("web", "1.0.0"), env={"DATA": "${data_dir}/db", "FROM_BASE": "${HOME}!"})
    project = write_project(
        tmp_path / "runyard.toml",
        '[env]\nDB = "${DATA}/main.db"\n[services.web.env]\nDB_URL = "sqlite://${DB}"\n',
    )
    user = tmp_path / "user.toml"
    user.write_text('[env]\nDB_URL = "${DB_URL}?mode=ro"\n')
    r = resolve_service_env(tree, "web", project=project, user_config=user, base={"HOME": "/h"})
    data = f"{tree.root}/data/web/db"
    assert r.env["DATA"] == data
    assert r.env["FROM_BASE"] == "/h!"
    assert r.env["DB"] == f"{data}/main.db"
    assert r.env["DB_URL"] == f"sqlite://{data}/main.db?mode=ro"

    # Within one layer, values do not see each other (key order would matter otherwise).
    project = write_project(tmp_path / "runyard.toml", '[env]\nA = "1"\nB = "${A}"\n')
    with pytest.raises(ProjectError, match=r"env\.B: \$\{A\} is not defined"):
        resolve_service_env(tree, "web", project=project, base={})


def test_dollar_escapes_and_bare_dollars(tree: RuntimeTree, tmp_path: Path) -> None:
    install(tree, ("web", "1.0.0"))
    project = write_project(
        tmp_path / "runyard.toml",
        '[env]\nPRICE = "$$5 and $$${service}"\nBARE = "$HOME/x $ and $"\nLITERAL = "$${root}"\n',
    )
    r = resolve_service_env(tree, "web", project=project, base={"HOME": "/h"})
    assert r.env["PRICE"] == "$5 and $web"
    assert r.env["BARE"] == "$HOME/x $ and $"
    assert r.env["LITERAL"] == "${root}"


def test_base_values_are_not_expanded(tree: RuntimeTree) -> None:
    install(tree, ("web", "1.0.0"))
    r = resolve_service_env(tree, "web", base={"ODD": "${nope} $$"})
    assert r.env["ODD"] == "${nope} $$"


def test_unknown_reference_names_layer_and_variable(tree: RuntimeTree, tmp_path: Path) -> None:
    install(tree, ("web", "1.0.0"), env={"X": "${port.http}"})
    with pytest.raises(ProjectError) as exc:
        resolve_service_env(tree, "web", base={})
    assert str(exc.value).startswith("manifest env (web 1.0.0): X: ${port.http} is not defined")

    tree2 = RuntimeTree(tmp_path / "t2")
    init_tree(tree2)
    install(tree2, ("web", "1.0.0"))
    (tree2.config_dir / "web").mkdir()
    conf = tree2.config_dir / "web" / "env.toml"
    conf.write_text('GOOD = "1"\nBAD = "x${MISSING}y"\n')
    with pytest.raises(ProjectError) as exc:
        resolve_service_env(tree2, "web", base={})
    assert str(exc.value).startswith(f"{conf}: BAD: ${{MISSING}} is not defined")
    assert "\n" not in str(exc.value)

    conf.write_text('BAD = "${unterminated"\n')
    with pytest.raises(ProjectError, match=r"BAD: unterminated"):
        resolve_service_env(tree2, "web", base={})

    user = tmp_path / "user.toml"
    user.write_text('[services.web]\nenv = { U = "${NOPE}" }\n')
    conf.unlink()
    with pytest.raises(ProjectError, match=rf"^{user}: services\.web\.env\.U: \$\{{NOPE\}}"):
        resolve_service_env(tree2, "web", user_config=user, base={})


# --- the project file ----------------------------------------------------------------------------


def test_project_file_loads_and_converts_values(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "runyard.toml"
    f.parent.mkdir()
    project = write_project(
        f,
        'root = "./rt"\n'
        '[env]\nTZ = "UTC"\nWORKERS = 4\nRATIO = 1.5\nDEBUG = true\nQUIET = false\n'
        '[services.web]\nversion = "1.2.x"\nneeds = ["redis"]\nenv = { PORT = 8080 }\n'
        "[services.redis]\n",
    )
    assert project.path == f
    assert project.env == {
        "TZ": "UTC",
        "WORKERS": "4",
        "RATIO": "1.5",
        "DEBUG": "true",
        "QUIET": "false",
    }
    web = project.services["web"]
    assert (web.version, web.needs, web.env) == ("1.2.x", ["redis"], {"PORT": "8080"})
    assert project.services["redis"].env == {} and project.services["redis"].version is None
    assert project_root(project) == tmp_path / "sub" / "rt"
    assert project_root(Project()) is None


def test_project_file_is_found_in_the_working_directory(
    tree: RuntimeTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_project() == Project()
    install(tree, ("web", "1.0.0"))
    (tmp_path / "runyard.toml").write_text(
        f'root = "{tree.root.name}"\n[services.web.env]\nHELLO = "${{service}}"\n'
    )
    assert load_project().path == tmp_path / "runyard.toml"
    # service_env: root from the project file, project loaded from the working directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    project = load_project()
    monkeypatch.chdir(elsewhere)
    assert service_env("web", project=project)["HELLO"] == "web"
    monkeypatch.chdir(tmp_path)
    assert service_env("web")["HELLO"] == "web"
    assert "HELLO" not in service_env("web", root=tree.root, project=Project())


def test_service_env_root_argument(tree: RuntimeTree, tmp_path: Path) -> None:
    install(tree, ("web", "1.0.0"))
    env = service_env("web", root=str(tree.root))
    assert env["PATH"].startswith(bin_dir(tree, "web", "1.0.0"))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "[services.web]\nenv = { PORT = [1] }\n",
            "services.web.env.PORT: expected a string, number or boolean, got array",
        ),
        (
            "[services.web.env.PORT]\nx = 1\n",
            "services.web.env.PORT: expected a string, number or boolean, got table",
        ),
        (
            "[env]\nWHEN = 1979-05-27\n",
            "env.WHEN: expected a string, number or boolean, got date/time",
        ),
        ('[services.web]\nenv = { "A=B" = "1" }\n', "services.web.env.A=B: env name 'A=B'"),
        ('[env]\n"" = "1"\n', "env.: an env name must not be empty"),
        ("env = 3\n", "env: expected a table, got int"),
        ("[services.web]\nversion = 3\n", "services.web.version: expected str, got int"),
        ('[services.web]\nversion = "1.2.y"\n', "services.web.version: '1.2.y' is not a version"),
        ('[services.web]\nneeds = "redis"\n', "services.web.needs: expected array, got str"),
        ("[services.web]\nneeds = [1]\n", "services.web.needs[0]: expected str, got int"),
        ('[services.web]\nneeds = ["Bad Name"]\n', "services.web.needs[0]: service name"),
        ('[services.web]\nneeds = ["web"]\n', "services.web.needs[0]: a service cannot need"),
        ("[services.web]\nautostrat = true\n", "services.web.autostrat: unknown field"),
        ("[services.Web]\n", "services.Web: service name 'Web' must be"),
        ("[services.runyard]\n", "services.runyard: 'runyard' is reserved"),
        ('services = { web = "x" }\n', "services.web: expected a table, got str"),
        ("services = [1]\n", "services: expected a table, got array"),
        ("root = 1\n", "root: expected str, got int"),
        ('path = "x"\n', "path: unknown field"),
        ("colour = 1\n", "colour: unknown field"),
    ],
)
def test_malformed_project_file_is_a_one_line_error(tmp_path: Path, text: str, where: str) -> None:
    f = tmp_path / "runyard.toml"
    f.write_text(text)
    with pytest.raises(ProjectError) as exc:
        load_project(f)
    msg = str(exc.value)
    assert msg.startswith(f"{f}: {where}"), msg
    assert "\n" not in msg


def test_toml_syntax_error_is_a_one_line_error(tmp_path: Path) -> None:
    f = tmp_path / "runyard.toml"
    f.write_text('[services.web\nversion = "1"\n')
    with pytest.raises(ProjectError) as exc:
        load_project(f)
    assert str(exc.value).startswith(f"{f}: ") and "line 1" in str(exc.value)
    assert "\n" not in str(exc.value)

    f.write_bytes(b'a = "\xff"\n')
    with pytest.raises(ProjectError, match=r"runyard\.toml: "):
        load_project(f)

    with pytest.raises(ProjectError, match=r"missing\.toml: no such file"):
        load_project(tmp_path / "missing.toml")


def test_malformed_env_files_name_file_and_key(tree: RuntimeTree, tmp_path: Path) -> None:
    install(tree, ("web", "1.0.0"))
    (tree.config_dir / "web").mkdir()
    conf = tree.config_dir / "web" / "env.toml"
    conf.write_text("[NESTED]\nx = 1\n")
    with pytest.raises(ProjectError) as exc:
        resolve_service_env(tree, "web", base={})
    assert str(exc.value) == f"{conf}: NESTED: expected a string, number or boolean, got table"

    conf.write_text("PORT = 8080\nON = true\nF = 0.25\n")
    r = resolve_service_env(tree, "web", base={})
    assert (r.env["PORT"], r.env["ON"], r.env["F"]) == ("8080", "true", "0.25")
    conf.write_text("A = \n")
    with pytest.raises(ProjectError, match=rf"^{conf}: .*line 1"):
        resolve_service_env(tree, "web", base={})
    conf.unlink()

    user = tmp_path / "user.toml"
    for text, where in [
        ("[services.web]\nenv = { X = [1] }\n", "services.web.env.X: expected a string"),
        ('[services.web]\nversion = "1.x"\n', "services.web.version: unknown field"),
        ('root = "/x"\n', "root: unknown field"),
        ("[env]\nX = { a = 1 }\n", "env.X: expected a string, number or boolean, got table"),
    ]:
        user.write_text(text)
        with pytest.raises(ProjectError) as exc:
            resolve_service_env(tree, "web", user_config=user, base={})
        assert str(exc.value).startswith(f"{user}: {where}"), str(exc.value)

    with pytest.raises(ProjectError, match="no such file"):
        resolve_service_env(tree, "web", user_config=tmp_path / "absent.toml", base={})
    assert load_user_config(tmp_path / "absent.toml").env == {}


# --- a real child --------------------------------------------------------------------------------


def test_a_real_child_sees_the_merged_env_and_scoped_path(
    tree: RuntimeTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = load_manifest(tree)
    add_entry(tree, manifest, "web", "1.0.0", env={"FROM_MANIFEST": "m"}, ports={"http": 8080})
    add_entry(tree, manifest, "redis", "7.2.0")
    save_manifest(tree, manifest)
    project = write_project(
        tmp_path / "runyard.toml",
        '[env]\nTZ = "UTC"\n[services.web]\nneeds = ["redis"]\n'
        'env = { PORT = "${port.http}", FLAG = true }\n',
    )
    monkeypatch.setenv("RUNYARD_CONTROL", "do-not-leak")
    monkeypatch.setenv("PARENT_ONLY", "inherited")
    before = dict(os.environ)

    resolved = resolve_service_env(tree, "web", project=project)
    out = subprocess.run(
        [sys.executable, "-c", "import os,json;print(json.dumps(dict(os.environ)))"],
        env=resolved.env,
        capture_output=True,
        text=True,
        check=True,
    )
    child = json.loads(out.stdout)

    for key in ("FROM_MANIFEST", "TZ", "PORT", "FLAG", "PARENT_ONLY"):
        assert child[key] == resolved.env[key]
    assert (child["PORT"], child["FLAG"], child["TZ"]) == ("8080", "true", "UTC")
    assert "RUNYARD_CONTROL" not in child
    child_path = child["PATH"].split(os.pathsep)
    assert child_path[:2] == [bin_dir(tree, "web", "1.0.0"), bin_dir(tree, "redis", "7.2.0")]
    assert dict(os.environ) == before
    assert bin_dir(tree, "web", "1.0.0") not in os.environ.get("PATH", "")


def test_a_config_dir_named_in_another_case_is_looked_at(tree: RuntimeTree) -> None:
    """Review finding (issue 16, one listing of config/ per spec load): on a case-insensitive
    file system config/Web/ holds web's files, as a stat of config/web/service.toml finds; the
    listing must not rule it out, only a name absent in every case."""
    from runyard.runtime.config.env import EnvShared

    (tree.config_dir / "Web").mkdir(parents=True)
    shared = EnvShared(tree, {})
    assert shared.configured("web") and shared.configured("WEB")  # the stat decides
    assert not shared.configured("db")  # absent in every case: no stat needed
