#!/usr/bin/env bash
# The project's library graph, from CMake's own --graphviz output: each target with the
# project targets it links (direct edges only). docs/architecture.md shows its output.
# Usage: scripts/target-graph.sh [BUILD_DIR]   (default build; configures it if needed)
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cmake -S "$here" -B "$build" --graphviz="$out/g.dot" >/dev/null
# Nodes: "nodeN" [ label = "NAME" ...]; edges: "nodeA" -> "nodeB" (A links B).
awk '
  /\[ label = / { match($0, /"node[0-9]+"/); id = substr($0, RSTART, RLENGTH);
                  match($0, /label = "[^"]+"/); name[id] = substr($0, RSTART + 9, RLENGTH - 10) }
  / -> / { split($0, p, " -> "); a = p[1]; sub(/^[ \t]*/, "", a); b = p[2]; sub(/ .*/, "", b);
           edge[a] = edge[a] " " b }
  END {
    for (id in name) {
      n = name[id]
      if (n !~ /^(dk_|darknight$)/ || n ~ /^dk_layering_probe/) continue
      deps = ""
      split(edge[id], e, " ")
      for (i in e) if (e[i] != "" && e[i] != id && name[e[i]] ~ /^dk_/) deps = deps " " name[e[i]]
      print n ":" deps
    }
  }' "$out/g.dot" | while IFS=: read -r n deps; do
    printf '%-18s -> %s\n' "$n" "$(tr ' ' '\n' <<<"$deps" | sed '/^$/d' | sort | tr '\n' ' ')"
  done | sort
