"""Config precedence (defaults < tfship.yaml < TFSHIP_* environment < flags) and validation of every layer."""

from __future__ import annotations

import re

from pathlib import Path

import pytest

from tfship import config as tfconfig
from tfship.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tfship.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str = "", environ: dict | None = None, overrides: dict | None = None):
    return tfconfig.load(write_yaml(tmp_path, text), environ=environ or {}, overrides=overrides)


def test_repository_config_loads_with_its_models():
    config = tfconfig.load(REPO / "tfship.yaml", environ={})
    assert [m.name for m in config.models] == ["half_plus_two", "digits"]
    assert config.model("digits").signatures == ["serving_default", "classify"]
    assert config.root == REPO
    assert config.models_path == REPO / "models"


def test_defaults_when_no_file_is_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TFSHIP_CONFIG", raising=False)
    config = tfconfig.load(environ={})
    assert config == tfconfig.Config(root=tmp_path)
    assert config.kubernetes.replicas == 3 and config.base.source == "auto"


def test_each_layer_overrides_the_one_below(tmp_path):
    text = "kubernetes:\n  replicas: 5\n  namespace: from-yaml\nbase:\n  source: debian\n"
    assert load(tmp_path, text).kubernetes.replicas == 5
    env = {"TFSHIP_KUBERNETES_REPLICAS": "7", "TFSHIP_BASE_SOURCE": "upstream"}
    from_env = load(tmp_path, text, environ=env)
    assert (from_env.kubernetes.replicas, from_env.base.source, from_env.kubernetes.namespace) == (7, "upstream", "from-yaml")
    from_flags = load(tmp_path, text, environ=env, overrides={"kubernetes.replicas": "9", "base.source": None})
    assert from_flags.kubernetes.replicas == 9
    assert from_flags.base.source == "upstream"  # a flag left out (None) does not override
    assert load(tmp_path, text, overrides={"kubernetes.replicas": 2}).kubernetes.replicas == 2


def test_environment_reads_nested_keys_booleans_and_lists(tmp_path):
    config = load(
        tmp_path,
        environ={
            "TFSHIP_KUBERNETES_RESOURCES_CPU_LIMIT": "2",
            "TFSHIP_REGISTRY_AUTH": "yes",
            "TFSHIP_SERVING_GPU": "false",
            "TFSHIP_SERVING_EXTRA_ARGS": "--enable_batching, --batching_parameters_file=/b.txt",
            "TFSHIP_SMOKE_TIMEOUT": "2.5",
            "TFSHIP_MODELS_DIR": "exported",
        },
    )
    assert config.kubernetes.resources.cpu_limit == "2"
    assert config.registry.auth is True and config.serving.gpu is False
    assert config.serving.extra_args == ["--enable_batching", "--batching_parameters_file=/b.txt"]
    assert config.smoke.timeout == 2.5
    assert config.models_path == tmp_path / "exported"


def test_variables_that_are_not_settings_are_left_alone(tmp_path):
    config = load(tmp_path, environ={"TFSHIP_CACHE_DIR": "/x", "TFSHIP_REGISTRY_PASSWORD": "s3cret", "HOME": "/root"})
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    "text, named",
    [
        ("colour: blue\n", "unknown key 'colour'"),
        ("kubernetes:\n  replica: 3\n", "unknown key 'kubernetes.replica'"),
        ("kubernetes:\n  resources:\n    gpu: 1\n", "unknown key 'kubernetes.resources.gpu'"),
        ("models:\n  - name: a\n    signature: [x]\n", "unknown key 'models[0].signature'"),
        ("root: /elsewhere\n", "unknown key 'root'"),
    ],
)
def test_unknown_yaml_keys_are_errors_naming_key_and_file(tmp_path, text, named):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert named in caught.value.message
    assert str(tmp_path / "tfship.yaml") in caught.value.message
    assert "known keys here" in caught.value.hint


@pytest.mark.parametrize(
    "text, named",
    [
        ("kubernetes:\n  replicas: three\n", "'kubernetes.replicas' must be a whole number"),
        ("kubernetes:\n  replicas: true\n", "'kubernetes.replicas' must be a whole number"),
        ("base:\n  source: docker\n", "'base.source' must be one of upstream, debian, auto"),
        ("registry:\n  auth: 1\n", "'registry.auth' must be true or false"),
        ("smoke:\n  timeout: soon\n", "'smoke.timeout' must be a number"),
        ("serving:\n  extra_args: --flag\n", "'serving.extra_args' must be a list"),
        ("models:\n  - name: a\n    labels: {stable: one}\n", "'models[0].labels.stable' must be a whole number"),
        ("kubernetes: 3\n", "kubernetes must be a mapping"),
        ("- a\n- b\n", "must hold a mapping at the top"),
        ("kubernetes:\n  replicas: -1\n", "kubernetes.replicas must be 0 or more"),
        ("models:\n  - name: a\n  - name: a\n", "name 'a' appears twice"),
        ("models:\n  - name: a b\n", "name 'a b' is not a valid model name"),
        ("models:\n  - name: a\n    version_policy: specific\n", "models.a.versions is empty"),
    ],
)
def test_bad_yaml_values_are_errors_naming_the_key(tmp_path, text, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        load(tmp_path, text)


@pytest.mark.parametrize(
    "environ, named",
    [
        ({"TFSHIP_KUBERNETES_REPLICA": "3"}, "TFSHIP_KUBERNETES_REPLICA is not a tfship setting"),
        ({"TFSHIP_KUBERNETES": "x"}, "TFSHIP_KUBERNETES is not a tfship setting"),
        ({"TFSHIP_KUBERNETES_REPLICAS": "many"}, "TFSHIP_KUBERNETES_REPLICAS: 'kubernetes.replicas' must be a whole"),
        ({"TFSHIP_KUBERNETES_REPLICAS": "--5"}, "'kubernetes.replicas' must be a whole number"),
        ({"TFSHIP_KUBERNETES_REPLICAS": "²"}, "'kubernetes.replicas' must be a whole number"),
        ({"TFSHIP_REGISTRY_AUTH": "maybe"}, "'registry.auth' must be true or false"),
        ({"TFSHIP_BASE_SOURCE": "docker"}, "'base.source' must be one of"),
        ({"TFSHIP_SMOKE_TIMEOUT": "soon"}, "'smoke.timeout' must be a number"),
    ],
)
def test_bad_environment_is_an_error_naming_the_variable(tmp_path, environ, named):
    with pytest.raises(ConfigError, match=named):
        load(tmp_path, environ=environ)


def test_bad_flags_are_errors_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="flag for kubernetes.replicas: 'kubernetes.replicas' must be a whole number"):
        load(tmp_path, overrides={"kubernetes.replicas": "lots"})
    with pytest.raises(ConfigError, match="unknown key 'kubernetes.replica'"):
        load(tmp_path, overrides={"kubernetes.replica": "3"})
    with pytest.raises(ConfigError, match="unknown key 'cluster.replicas'"):
        load(tmp_path, overrides={"cluster.replicas": "3"})
    with pytest.raises(ConfigError, match="kubernetes.replicas must be 0 or more"):
        load(tmp_path, overrides={"kubernetes.replicas": "-2"})


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"tfship.yaml:2 is not valid YAML"):
        load(tmp_path, "kubernetes:\n\treplicas: 3\n")


def test_config_file_from_tfship_config_and_its_errors(tmp_path, monkeypatch):
    elsewhere = tmp_path / "conf" / "pipeline.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("models_dir: ../exports\n")
    monkeypatch.chdir(tmp_path)
    config = tfconfig.load(environ={"TFSHIP_CONFIG": str(elsewhere)})
    assert config.root == elsewhere.parent
    assert config.models_path == tmp_path / "exports"  # relative to the file, not the working folder
    with pytest.raises(ConfigError, match="TFSHIP_CONFIG names .*missing.yaml, which does not exist"):
        tfconfig.load(environ={"TFSHIP_CONFIG": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match="does not exist"):
        tfconfig.load(tmp_path / "absent.yaml", environ={})


def test_unknown_model_name_lists_the_known_ones():
    config = tfconfig.load(REPO / "tfship.yaml", environ={})
    with pytest.raises(ConfigError, match="unknown model 'mnist'") as caught:
        config.model("mnist")
    assert "half_plus_two, digits" in caught.value.hint


def test_every_error_is_one_line_with_a_hint(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "kubernetes:\n  replica: 3\n")
    line = caught.value.one_line()
    assert line.startswith("Error: ") and "(hint: " in line and "\n" not in line


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("kubernetes.namespace", "Bad_NS", "kubernetes.namespace 'Bad_NS' is not a DNS label"),
        ("kubernetes.namespace", "-edge", "kubernetes.namespace '-edge' is not a DNS label"),
        ("kubernetes.app", "x" * 64, "is not a DNS label"),
        ("project", "My Project", "project 'My Project' is not a DNS label"),
        ("images.serving", "Tfship-Serving", "images.serving 'Tfship-Serving' is not a valid image repository name"),
        ("registry.repository", "team//models", "registry.repository 'team//models' is not a valid image repository"),
        ("serving.rest_port", "70000", "serving.rest_port 70000 is not a TCP port"),
        ("serving.rest_port", "8500", "serving.grpc_port and serving.rest_port are both 8500"),
        ("smoke.max_error_rate", "1.5", "smoke.max_error_rate 1.5 is not a rate"),
        ("smoke.timeout", "0", "smoke.timeout must be more than 0 seconds"),
    ],
)
def test_names_ports_and_ranges_are_checked_at_load(tmp_path, key, value, message):
    (tmp_path / "tfship.yaml").write_text("project: tfship\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        tfconfig.load(tmp_path / "tfship.yaml", environ={}, overrides={key: value})


def test_good_names_pass(tmp_path):
    (tmp_path / "tfship.yaml").write_text("project: tfship\n")
    loaded = tfconfig.load(tmp_path / "tfship.yaml", environ={}, overrides={"kubernetes.namespace": "team-a", "project": "shop2",
                                                       "registry.repository": "org/ml.models"})
    assert loaded.kubernetes.namespace == "team-a"
