#!/usr/bin/env bash
# Build llama.cpp's own llama-server from the llama.cpp vendored in the pinned
# llama-cpp-python sdist (the same C++ the node runs), for bench/batching.py.
#
#   bench/build_llama_server.sh [DEST]     # default ~/.cache/edgewise/llama-server-0.3.36
#
# Portable like the node's engine (Makefile: GGML_NATIVE=OFF, one CPU backend per
# x86-64 level, loaded at run time). The sdist's sha256 is checked against the one
# edgewise.supply.tools pins. Takes ~10 min on 2 cores, once.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$here/.venv/bin/python}"
version="$("$py" -c 'from edgewise.supply.tools import LLAMA_CPP_PYTHON_VERSION as v; print(v)')"
sha="$("$py" -c 'from edgewise.supply.tools import SDIST_SHA256 as s; print(s)')"
dest="${1:-$HOME/.cache/edgewise/llama-server-$version}"
if [ -x "$dest/llama-server" ]; then echo "$dest/llama-server"; exit 0; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "==> downloading llama-cpp-python $version sdist" >&2
"$py" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
tarball="$(ls "$work"/llama_cpp_python-*.tar.gz)"
echo "$sha  $tarball" | sha256sum -c --quiet
tar -xzf "$tarball" -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
echo "==> building llama-server from $src (portable CPU backends)" >&2
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_TOOLS=ON >&2
cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$dest.tmp"
cp -a "$work/build/bin/." "$dest.tmp/"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
echo "$dest/llama-server"
