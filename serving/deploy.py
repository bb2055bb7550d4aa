"""Deployment files for the real TF Serving server, generated from one set of parameters.

- ``models.config``: a ``tensorflow.serving.ModelServerConfig`` in text format (written with
  the official protos from ``tensorflow-serving-api``) serving the pushed base directory and
  keeping the newest ``keep_versions`` versions loaded (``model_version_policy.latest``);
- ``docker-compose.yml``: the official ``tensorflow/serving`` image with the push directory
  mounted read-only, REST on 8501 and gRPC on 8500, polling the config and the file system;
- ``k8s.yaml``: a Deployment (readiness on the model status endpoint
  ``/v1/models/<name>``) and a Service, the push directory mounted from a PVC.
"""

from __future__ import annotations

from pathlib import Path

import yaml

TF_SERVING_IMAGE = "tensorflow/serving:2.16.1"  # the server release matching tensorflow-serving-api


def server_args(poll_config: bool) -> list[str]:
    """tensorflow_model_server flags shared by the compose file and the Kubernetes Deployment."""
    args = ["--model_config_file=/config/models.config"]
    if poll_config:
        args.append("--model_config_file_poll_wait_seconds=60")
    return args + ["--file_system_poll_wait_seconds=30", "--rest_api_port=8501", "--port=8500"]


def models_config(model_name: str, base_path: str, keep_versions: int = 2) -> str:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    if keep_versions < 1:
        raise ValueError("keep_versions must be >= 1")
    cfg = model_server_config_pb2.ModelServerConfig()
    m = cfg.model_config_list.config.add()
    m.name = model_name
    m.base_path = base_path
    m.model_platform = "tensorflow"
    m.model_version_policy.latest.num_versions = keep_versions
    return text_format.MessageToString(cfg)


def docker_compose(model_name: str, host_push_dir: str, keep_versions: int = 2) -> str:
    doc = {
        "services": {
            "tf-serving": {
                "image": TF_SERVING_IMAGE,
                "ports": ["8500:8500", "8501:8501"],
                "volumes": [f"{host_push_dir}:/models/{model_name}:ro", "./models.config:/config/models.config:ro"],
                "command": server_args(poll_config=True),
                "healthcheck": {
                    "test": ["CMD-SHELL", f"curl -sf http://localhost:8501/v1/models/{model_name} | grep -q AVAILABLE"],
                    "interval": "10s",
                    "retries": 12,
                },
                "restart": "unless-stopped",
            }
        }
    }
    return f"# TF Serving for '{model_name}' (keeps the newest {keep_versions} versions, see models.config)\n" + yaml.safe_dump(doc, sort_keys=False)


def kubernetes(model_name: str, pvc_name: str, replicas: int = 2) -> str:
    labels = {"app": f"tf-serving-{model_name}".replace("_", "-")}
    name = labels["app"]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "tf-serving",
                            "image": TF_SERVING_IMAGE,
                            "args": server_args(poll_config=False),
                            "ports": [{"name": "grpc", "containerPort": 8500}, {"name": "http", "containerPort": 8501}],
                            "readinessProbe": {
                                "httpGet": {"path": f"/v1/models/{model_name}", "port": 8501},
                                "initialDelaySeconds": 10,
                                "periodSeconds": 10,
                            },
                            "livenessProbe": {"tcpSocket": {"port": 8500}, "initialDelaySeconds": 30, "periodSeconds": 30},
                            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
                            "volumeMounts": [
                                {"name": "models", "mountPath": f"/models/{model_name}", "readOnly": True},
                                {"name": "config", "mountPath": "/config", "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "models", "persistentVolumeClaim": {"claimName": pvc_name, "readOnly": True}},
                        {"name": "config", "configMap": {"name": f"{name}-config"}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "grpc", "port": 8500, "targetPort": 8500}, {"name": "http", "port": 8501, "targetPort": 8501}],
        },
    }
    note = f"# kubectl create configmap {name}-config --from-file=models.config && kubectl apply -f k8s.yaml\n"
    return note + yaml.safe_dump_all([deployment, service], sort_keys=False)


def write_deployment_files(out_dir: str | Path, model_name: str, host_push_dir: str, pvc_name: str,
                           keep_versions: int = 2, replicas: int = 2) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "models.config": models_config(model_name, f"/models/{model_name}", keep_versions),
        "docker-compose.yml": docker_compose(model_name, host_push_dir, keep_versions),
        "k8s.yaml": kubernetes(model_name, pvc_name, replicas),
    }
    paths = []
    for name, text in files.items():
        (out / name).write_text(text)
        paths.append(out / name)
    return paths
