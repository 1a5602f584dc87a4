"""`invoke export` as users run it: both models exported inside the devel image on the real engine, validated.

The project under test is a temporary folder with the repository's model specs, bases from the Debian mirror (so
no Docker Hub is needed) and a devel image name of its own, removed at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tfship import config as tfconfig
from tfship import docker_client, engine, export, models

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEVEL_IMAGE = "tfship-itest-export-devel"
# Not root and not the image's own user: proves the container writes as the models folder's owner.
MODELS_OWNER = (23456, 23456)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    engine.ensure_engine()
    root = tmp_path_factory.mktemp("export-project")
    repo_config = tfconfig.load(REPO / "tfship.yaml", environ={})
    models_yaml = "".join(
        f"  - name: {m.name}\n    exporter: {m.exporter}\n    signatures: [{', '.join(m.signatures)}]\n"
        for m in repo_config.models
    )
    (root / "tfship.yaml").write_text(
        f"base:\n  source: debian\nimages:\n  devel: {DEVEL_IMAGE}\nmodels:\n{models_yaml}"
    )
    config = tfconfig.load(root / "tfship.yaml", environ={})
    config.models_path.mkdir()
    os.chown(config.models_path, *MODELS_OWNER)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFSHIP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))  # validation really loads
        yield config
    for tag in docker_client.api().images(name=DEVEL_IMAGE):
        for ref in tag.get("RepoTags") or []:
            docker_client.remove_image(ref)


@pytest.fixture(scope="module")
def exported(project):
    return export.export(project)  # inside the devel image: the default


def test_both_models_exported_inside_the_devel_image_and_valid(project, exported):
    assert [(r.model, r.version) for r in exported] == [("half_plus_two", 1), ("digits", 1)]
    assert all(r.where.startswith(f"devel image {DEVEL_IMAGE}:") for r in exported)
    assert models.validate_all(project) == [
        "half_plus_two/1: ok, loads, signatures serving_default, classify_x_to_y, regress_x_to_y",
        "digits/1: ok, loads, signatures serving_default, classify",
    ]
    digits = exported[1]
    assert digits.summary["accuracy"] >= 0.95
    sample = models.load_smoke_sample(digits.path)
    assert sample["held_out_accuracy"] == digits.summary["accuracy"]
    assert models.read_signatures(exported[0].path)["classify_x_to_y"] == "tensorflow/serving/classify"


def test_exported_files_belong_to_the_models_folder_owner(project, exported):
    for result in exported:
        for path in [result.path, *result.path.rglob("*")]:
            assert (path.stat().st_uid, path.stat().st_gid) == MODELS_OWNER, path
    assert not (project.models_path / models.STAGING_DIR).exists()


def test_no_export_container_is_left(project, exported):
    mine = {"label": [f"tfship.models-dir={project.models_path}"]}
    assert docker_client.api().containers(all=True, filters=mine) == []


def test_the_image_and_the_host_export_the_same_weights(project, exported):
    [on_host] = export.export(project, model="digits", in_devel=False)
    assert on_host.version == 2
    weights = "variables/variables.data-00000-of-00001"
    assert (on_host.path / weights).read_bytes() == (exported[1].path / weights).read_bytes()


def test_next_export_in_the_image_takes_the_next_version(project, exported):
    [again] = export.export(project, model="half_plus_two")
    assert again.version == 2
    assert models.versions(project, "half_plus_two") == [1, 2]
