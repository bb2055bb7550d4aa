"""Deployment files are checked by parsing them (the server itself cannot run here)."""

import yaml
from click.testing import CliRunner
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from pipeline.cli import main


def test_deploy_files_parse(tmp_path):
    r = CliRunner().invoke(main, ["deploy-files", "--out", str(tmp_path), "--model-name", "ctr_cvr", "--keep-versions", "3",
                                  "--push-dir", "/srv/push/ctr_cvr"])
    assert r.exit_code == 0, r.output
    cfg = text_format.Parse((tmp_path / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (m,) = cfg.model_config_list.config
    assert (m.name, m.base_path, m.model_platform) == ("ctr_cvr", "/models/ctr_cvr", "tensorflow")
    assert m.model_version_policy.latest.num_versions == 3

    compose = yaml.safe_load((tmp_path / "docker-compose.yml").read_text())
    svc = compose["services"]["tf-serving"]
    assert "/srv/push/ctr_cvr:/models/ctr_cvr:ro" in svc["volumes"]
    assert "--model_config_file=/config/models.config" in svc["command"]
    assert {"8500:8500", "8501:8501"} == set(svc["ports"])

    deployment, service = yaml.safe_load_all((tmp_path / "k8s.yaml").read_text())
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/models/ctr_cvr", "port": 8501}
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
