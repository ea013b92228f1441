#!/usr/bin/env bash
# Checks that the build uses nothing from the system that a fresh Debian 12 machine would
# lack after `make deps`: every system file and include directory the build uses must
# belong (dpkg -S) to a package that scripts/install-deps.sh installs, or that apt installs
# with them through hard dependencies (Depends/Pre-Depends: recommends are off there), or
# that a minimal Debian system has (Essential and Priority: required packages).
#
# What "uses" means, all read from BUILD_DIR after it was configured and built:
#  - the headers every compile included (ninja's dependency log, `ninja -t deps`);
#  - the include directories of every compile (compile_commands.json: -I, -isystem);
#  - the libraries on every link line (build.ninja; -lX resolved like the linker does);
#  - CMakeCache.txt's FILEPATH/PATH entries (compilers, tools, *_LIBRARY, *_INCLUDE_DIR,
#    package *_DIR);
#  - every CMake file that configuring ran (the find_package configs, e.g. oneDNN's
#    dnnl-config.cmake and the FindOpenCL it calls) and the file each find_path/find_file
#    found (e.g. CL/cl.h): CMake's configure step is re-run on BUILD_DIR with --trace
#    (nothing is rebuilt).
# The file as the build names it is what is checked (libOpenCL.so, from the -dev package),
# not only what a symlink points to (libOpenCL.so.1, pulled in by the runtime library).
# The package set a fresh machine gets is what apt would install there: `apt-get -s` from
# an empty package state, recommends off, with the Essential/required packages and the
# script's list (so apt's choice among alternatives and virtual packages is the real one;
# needs apt's package lists, i.e. `apt-get update` once).
# Skipped: files in the repository and BUILD_DIR, and the CUDA toolkit at /usr/local/cuda,
# which is optional and not from Debian (README "Dependencies").
#
# Usage: scripts/check-deps.sh [--packages FILE] [BUILD_DIR]     (BUILD_DIR: build)
#   --packages FILE: check against the package names in FILE (one per line, # comments)
#   instead of `scripts/install-deps.sh --list`; e.g. to see that a package is needed.
# Exit 0 when every path is covered; 1 (listing each path and its package) when not.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
pkg_file=""
build_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --packages) pkg_file=${2:?--packages needs a file}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    -*) echo "check-deps: unknown option $1" >&2; exit 2 ;;
    *) build_dir=$1; shift ;;
  esac
done
build_dir=${build_dir:-build}
case "$build_dir" in /*) ;; *) build_dir="$PWD/$build_dir" ;; esac

for f in CMakeCache.txt build.ninja .ninja_deps compile_commands.json; do
  if [ ! -e "$build_dir/$f" ]; then
    echo "check-deps: $build_dir/$f is missing: configure and build $build_dir first" >&2
    exit 2
  fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

# The packages a fresh machine has after install-deps.sh.
if [ -n "$pkg_file" ]; then
  sed -e 's/#.*//' "$pkg_file" | tr -s ' \t' '\n' | sed '/^$/d' >"$tmp/listed"
else
  "$repo/scripts/install-deps.sh" --list >"$tmp/listed"
fi
dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Essential} ${Priority}\n' |
  awk '$1 == "ii" && ($3 == "yes" || $4 == "required") { print $2 }' >"$tmp/base"
: >"$tmp/empty-status"
mapfile -t wanted < <(cat "$tmp/base" "$tmp/listed")
simulate() {
  apt-get -s -q -o Dir::State::status="$tmp/empty-status" -o APT::Install-Recommends=false \
    -o APT::Install-Suggests=false install "${wanted[@]}" >"$tmp/sim" 2>&1
}
# A machine whose packages came preinstalled may have no package lists (CI images often
# drop them): fetch them once, as install-deps.sh would.
if ! simulate && [ -z "$(find /var/lib/apt/lists -name '*_Packages*' -print -quit 2>/dev/null)" ]; then
  sudo_cmd=(); [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd=(sudo)
  echo "check-deps: no apt package lists; running apt-get update" >&2
  "${sudo_cmd[@]}" apt-get update -q >&2 || true
fi
if ! simulate; then
  cat "$tmp/sim" >&2
  echo "check-deps: apt-get could not resolve the package list (run apt-get update?)" >&2
  exit 2
fi
{ awk '$1 == "Inst" { print $2 }' "$tmp/sim"; cat "$tmp/base" "$tmp/listed"; } |
  sort -u >"$tmp/covered"

# The CMake files and find_path/find_file results of configuring (re-run, traced).
cmake --trace-expand --trace-format=json-v1 --trace-redirect="$tmp/trace.json" \
  -S "$repo" -B "$build_dir" >"$tmp/cmake.log" 2>&1 || {
  cat "$tmp/cmake.log" >&2; echo "check-deps: re-running cmake on $build_dir failed" >&2; exit 2; }
ninja -C "$build_dir" -t deps >"$tmp/ninja-deps"

status=0
python3 - "$repo" "$build_dir" "$tmp" <<'EOF' || status=$?
import json, os, re, shlex, subprocess, sys

repo, build, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
paths = {}  # path -> (kind, [how the build uses it]); kind: the first seen

def add(p, kind, why):
    if p and os.path.isabs(p):
        k, whys = paths.setdefault(os.path.normpath(p), (kind, []))
        if why not in whys:
            whys.append(why)

cache = {}
for line in open(os.path.join(build, "CMakeCache.txt")):
    m = re.match(r"^([A-Za-z0-9_.+-]+):(FILEPATH|PATH|STRING|BOOL|INTERNAL|STATIC|UNINITIALIZED)=(.*)$", line)
    if not m:
        continue
    cache[m.group(1)] = m.group(3)
    if m.group(2) in ("FILEPATH", "PATH") and m.group(1) != "CMAKE_INSTALL_PREFIX" \
            and os.path.exists(m.group(3)):
        add(m.group(3), "CMakeCache entries", "CMakeCache " + m.group(1))
compiler = cache.get("CMAKE_CXX_COMPILER", "c++")

for line in open(os.path.join(tmp, "trace.json")):
    d = json.loads(line)
    if "file" in d:
        add(d["file"], "CMake files", "CMake ran it while configuring")
    cmd = d.get("cmd", "").lower()
    if cmd in ("find_path", "find_file") and d.get("args"):
        var = d["args"][0]
        found = cache.get(var, "")
        if not found or found.endswith("-NOTFOUND"):
            continue
        for a in d["args"][1:]:
            for name in a.split(";"):
                f = os.path.join(found, name) if cmd == "find_path" else found
                if name and not os.path.isabs(name) and os.path.isfile(f):
                    add(f, "files found by find_path", f"{cmd}({var} {name})")

for entry in json.load(open(os.path.join(build, "compile_commands.json"))):
    args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    for i, a in enumerate(args):
        for flag in ("-isystem", "-iquote", "-idirafter", "-I"):
            if a == flag and i + 1 < len(args):
                add(args[i + 1], "include directories", "compile flag " + flag)
            elif a.startswith(flag) and len(a) > len(flag):
                add(a[len(flag):], "include directories", "compile flag " + flag)

def resolve_lib(name, dirs):
    for d in dirs:
        for ext in (".so", ".a"):
            if os.path.exists(os.path.join(d, "lib" + name + ext)):
                return os.path.join(d, "lib" + name + ext)
    for ext in (".so", ".a"):
        out = subprocess.run([compiler, "-print-file-name=lib" + name + ext],
                             capture_output=True, text=True).stdout.strip()
        if os.path.isabs(out):
            return out
    return None

ninja_lines = [l.strip() for l in open(os.path.join(build, "build.ninja"))]
link_dirs = sorted({t[2:] for s in ninja_lines if s.startswith("LINK_PATH = ")
                    for t in shlex.split(s[12:]) if t.startswith("-L")})
unresolved = set()
for s in ninja_lines:
    if not s.startswith("LINK_LIBRARIES = "):
        continue
    for t in shlex.split(s[17:]):
        if t.startswith("-l") and len(t) > 2:
            f = resolve_lib(t[2:], link_dirs)
            if f:
                add(f, "libraries", "link flag " + t)
            else:
                unresolved.add(t)
        elif os.path.isabs(t):
            add(t, "libraries", "link line")

for line in open(os.path.join(tmp, "ninja-deps")):
    if line.startswith("    "):
        add(line.strip(), "headers", "included by a compile")

# Which paths to check: system ones, not the repo, the build dir, or the CUDA toolkit.
skip = [repo, build, os.path.realpath(repo), os.path.realpath(build), "/usr/local/cuda",
        os.path.realpath("/usr/local/cuda")]
def skipped(p):
    return any(p == s or p.startswith(s.rstrip("/") + "/") for s in skip)
check = sorted(p for p in paths if not skipped(p) and not skipped(os.path.realpath(p)))

def owners(ps):
    """dpkg -S over many paths at once: path -> set of package names."""
    out = subprocess.run(["dpkg-query", "-S", "--"] + ps, capture_output=True, text=True).stdout
    own = {}
    for line in out.splitlines():
        if line.startswith("diversion by") or ": " not in line:
            continue
        pkgs, path = line.split(": ", 1)
        own.setdefault(path, set()).update(p.strip().split(":")[0] for p in pkgs.split(","))
    return own

own = owners(check)
def alternatives(p):  # merged /usr: dpkg may know a file as /lib/... or /usr/lib/...
    alts = []
    for a, b in (("/usr/lib/", "/lib/"), ("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/")):
        if p.startswith(a): alts.append(b + p[len(a):])
        if p.startswith(b): alts.append(a + p[len(b):])
    r = os.path.realpath(p)  # alternatives (/usr/bin/c++) and symlinks nobody owns
    if r != p: alts.append(r)
    return alts
missing = [p for p in check if p not in own]
extra = owners(sorted({a for p in missing for a in alternatives(p)})) if missing else {}
for p in missing:
    for a in alternatives(p):
        if a in extra:
            own[p] = extra[a]
            break

covered = set(open(os.path.join(tmp, "covered")).read().split())
bad, unowned, pkgs_used = [], [], set()
for p in check:
    o = own.get(p)
    if not o:
        unowned.append(p)
    elif o & covered:
        pkgs_used |= o & covered
    else:
        bad.append((p, o))

kinds = {}
for p in check:
    k = paths[p][0]
    kinds[k] = kinds.get(k, 0) + 1
print(f"check-deps: {len(check)} system paths checked ("
      + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + f"), from {len(pkgs_used)} covered packages")
if unresolved:
    print("check-deps: not checked (the linker resolves them elsewhere): " + " ".join(sorted(unresolved)))
for p, o in bad:
    print(f"NOT COVERED: {p}  [package: {', '.join(sorted(o))}; used as: {'; '.join(paths[p][1][:3])}]")
for p in unowned:
    print(f"NOT COVERED: {p}  [no Debian package owns it; used as: {'; '.join(paths[p][1][:3])}]")
if bad or unowned:
    pk = sorted({q for _, o in bad for q in o})
    print(f"check-deps: FAIL: {len(bad) + len(unowned)} paths are not from packages that "
          "scripts/install-deps.sh installs (or their hard dependencies)"
          + ("; their packages: " + " ".join(pk) if pk else ""))
    sys.exit(1)
print("check-deps: ok, every path comes from scripts/install-deps.sh's packages, "
      "their hard dependencies, or a minimal Debian system")
EOF
echo "check-deps: took $(($(date +%s) - start)) s"
exit $status
