#!/usr/bin/env bash
# Source this on the GPU machine (Python 3.12, no network, no Ray/pyhmmer) to get the pipeline's
# packages for a measurement. The device tool carries at most 64 MiB with the working tree, so the
# bundle (Ray 2.60 minus its Java jars, RLlib/Data/Serve/Tune/Train/LLM and dashboard web client,
# binaries stripped, xz-compressed; plus the py3.12 wheels of pyhmmer, biopython, gemmi and Ray's
# dependencies) travels in parts over consecutive calls on the warm machine:
#   call 1: carry .dev1 -> copies its part to /tmp/ffdev;  call 2: carry .dev2 -> the same;
#   call 3: carry .dev3 (last part + sha256) -> `source scripts/device_pipeline_env.sh` assembles,
#   checks the hash and installs under /tmp/ffsite; later calls just source it again.
# Build the parts: scripts/make_device_bundle.sh.
set -uo pipefail
mkdir -p /tmp/ffdev
for d in .dev1 .dev2 .dev3; do [ -d "$d" ] && cp -n "$d"/* /tmp/ffdev/ 2>/dev/null; done
if [ ! -f /tmp/ffsite/.ok ] && [ -f /tmp/ffdev/ffbundle.sha ]; then
  (cd /tmp/ffdev && cat ffpart.0 ffpart.1 ffpart.2 > /tmp/ffbundle.tar \
     && sed 's#/tmp/ffbundle.tar#/tmp/ffbundle.tar#' ffbundle.sha | sha256sum -c -) \
  && mkdir -p /tmp/ffsite && tar -xf /tmp/ffbundle.tar -C /tmp \
  && tar -xJf /tmp/ffbundle/raymin.tar.xz -C /tmp/ffsite \
  && python3 -m pip install -q --no-index --no-deps --target /tmp/ffsite /tmp/ffbundle/wheels/*.whl \
  && touch /tmp/ffsite/.ok
fi
export PYTHONPATH="$PWD:/tmp/ffsite${PYTHONPATH:+:$PYTHONPATH}" RAY_AUTH_MODE=disabled
python3 -c "import ray, pyhmmer, gemmi, Bio; print('pipeline env: ray', ray.__version__, 'pyhmmer', pyhmmer.__version__)"
