#!/bin/bash
# device call 1: install the carried wheels, keep the model's first half
set -x
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devcarry/whl/*.whl || exit 1
mkdir -p /tmp/modelwhl && cp .devcarry/partA/part_aa /tmp/modelwhl/ && ls -la /tmp/modelwhl
PYTHONPATH=/tmp/site:src python3 -c "import deepspeed, trl, transformers, accelerate, torch; print(deepspeed.__version__, trl.__version__, transformers.__version__, accelerate.__version__, torch.__version__, torch.cuda.get_device_name())"
