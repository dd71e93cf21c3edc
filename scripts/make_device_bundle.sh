#!/usr/bin/env bash
# Builds the parts that scripts/device_pipeline_env.sh assembles on the GPU machine: Python 3.12
# wheels of the pipeline's packages (the machine has torch, numpy, click, rich only, no network,
# and the device tool carries at most 64 MiB with the working tree).
#   Ray 2.60 without its Java jars, RLlib/Data/Serve/Tune/Train/LLM and the dashboard web client,
#   binaries stripped, xz-compressed; pyhmmer, biopython, gemmi and Ray's dependencies as wheels.
# Output: .dev1/ffpart.0, .dev2/ffpart.1, .dev3/ffpart.2 + ffbundle.sha (git-ignored: add
# `/.dev*/` to .git/info/exclude). Carry .dev1, .dev2, .dev3 in three consecutive device calls.
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(mktemp -d)
DL="pip download -q --only-binary=:all: --python-version 3.12 --no-deps --platform manylinux2014_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64"
$DL -d "$W/ray" ray==2.60.0
mkdir -p "$W/ffbundle/wheels" "$W/site"
$DL -d "$W/ffbundle/wheels" pyhmmer biopython gemmi msgpack protobuf pyyaml jsonschema attrs referencing \
    rpds-py jsonschema-specifications requests urllib3 idna certifi charset-normalizer filelock packaging
python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$W"/ray/ray-*.whl "$W/site"
cd "$W/site"
rm -rf ray/jars ray/rllib ray/data ray/serve ray/tune ray/train ray/llm ray/dashboard/client/build
for f in ray/_raylet.so ray/core/src/ray/gcs/gcs_server ray/core/src/ray/raylet/raylet; do
  strip --strip-unneeded "$f"
done
chmod +x ray/core/src/ray/gcs/gcs_server ray/core/src/ray/raylet/raylet
tar -cJf "$W/ffbundle/raymin.tar.xz" .
cd - >/dev/null
tar -cf /tmp/ffbundle.tar -C "$W" ffbundle
(cd /tmp && sha256sum ffbundle.tar | sed 's#  ffbundle.tar#  /tmp/ffbundle.tar#') > "$W/ffbundle.sha"
rm -rf .dev1 .dev2 .dev3 && mkdir -p .dev1 .dev2 .dev3
split -b 16000000 -d -a 1 /tmp/ffbundle.tar "$W/ffpart."
mv "$W/ffpart.0" .dev1/ && mv "$W/ffpart.1" .dev2/ && mv "$W/ffpart.2" .dev3/ && cp "$W/ffbundle.sha" .dev3/
ls -la .dev1 .dev2 .dev3
