#!/usr/bin/env bash
# System packages the test suite needs (Debian). Called by .ci/run; safe to run again.
set -euo pipefail
PKGS=(
  systemd  # systemd-analyze verify/security of the units; systemd --user for the supervision test
  mbpoll tshark libmodbus-dev gcc pkg-config  # PLC tests: libmodbus master, wire captures, the C Modbus server peer
  mosquitto  # MQTT tests: a real broker started by the tests on a free loopback port (never the system service)
  chromium  # console tests: Playwright drives Debian's chromium (executable_path), never a downloaded browser
  libc6-dev binutils  # GenICam tests: the fault-proxy producer is built with cc from nm's list of GenTL exports
)
if [ ${#PKGS[@]} -gt 0 ] && ! dpkg -s "${PKGS[@]}" >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PKGS[@]}" >/dev/null
fi
