# Image for the Kubeflow Pipelines V2 runner (`ncs compile --runner kubeflow --image <this image>`).
# Every component of the compiled pipeline runs in it: the TFX 1.16 base plus this project.
#   docker build -t REGISTRY/ncs-ranking:VERSION . && docker push REGISTRY/ncs-ranking:VERSION
FROM tensorflow/tfx:1.16.0

# tf-keras (Keras 2) for TFT / TFMA / TFRS; must be set before Python starts
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONHASHSEED=0

WORKDIR /app
COPY requirements.txt pyproject.toml README.md ./
# the base image already has TFX 1.16; the pins keep Beam 2.59 and the rest identical to local runs
RUN python -m pip install --no-cache-dir -r requirements.txt
COPY . .
RUN python -m pip install --no-cache-dir --no-deps -e .
