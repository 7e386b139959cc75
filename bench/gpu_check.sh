#!/usr/bin/env bash
cd "$(dirname "$0")/.." && PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec python bench/gpu_check.py "$@"
