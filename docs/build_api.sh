#!/usr/bin/env bash
# Rebuilds docs/API.md from the per-concept pages in docs/api/.
cd "$(dirname "$0")"
{
  echo "# lmp API reference"
  echo
  echo "What the code does today, concept by concept. Generated from docs/api/*.md"
  echo "by docs/build_api.sh; edit those pages. The contract it extends is"
  echo "../shared/API.md; where lmp differs, the page says so and why."
  echo
  for f in core pickle process pipe connection pool queue sync shm manager redis thread embed prefork socket log; do
    [ -f "api/$f.md" ] || continue
    echo
    sed 's/^## /### /; s/^# /## /' "api/$f.md"
  done
} > API.md
