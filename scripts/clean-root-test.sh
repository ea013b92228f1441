#!/usr/bin/env bash
# Runs `make test` the way a new user on a fresh Debian 12 machine would: builds a clean
# Debian 12 (bookworm) root from Debian's packages only (mmdebstrap, variant minbase, from
# the Debian mirrors this machine's apt uses), copies in the repository's working tree
# (the files `git ls-files` lists plus untracked, not ignored ones, so uncommitted changes
# are tested too; no build directories), and runs `make test` in it as root, in a chroot.
# The only package added to minbase is `make`, needed to type the README's first command;
# everything else comes from `make test` itself (its `make deps` runs apt-get in the root).
# Prints the time of each phase and the total; exits with `make test`'s status.
#
# Usage: sudo scripts/clean-root-test.sh [--head] [ROOT_DIR]
#   --head: test the last commit (git archive HEAD) instead of the working tree.
#   ROOT_DIR: where the root is built (default /var/tmp/darknight-clean-root); it is
#   removed first if an earlier run of this script made it, and left in place afterwards
#   (the log is ROOT_DIR/root/make-test.log) for inspection; delete it with rm -rf.
# Needs root (mmdebstrap's root mode, chroot, mounts in a private mount namespace), network
# access to the mirror, and about 3 GB of disk. Installs mmdebstrap on the host if missing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
head=0
if [ "${1:-}" = "--head" ]; then head=1; shift; fi
root=${1:-/var/tmp/darknight-clean-root}
marker=.darknight-clean-root

if [ "$(id -u)" -ne 0 ]; then
  echo "clean-root: needs root (mmdebstrap root mode and chroot)" >&2
  exit 1
fi
case "$root" in /*) ;; *) root="$PWD/$root" ;; esac
case "$root/" in "$repo"/*)
  echo "clean-root: ROOT_DIR must be outside the repository" >&2; exit 1 ;;
esac
if [ -e "$root" ]; then
  if [ ! -e "$root/$marker" ]; then
    echo "clean-root: $root exists and was not made by this script; not touching it" >&2
    exit 1
  fi
  rm -rf --one-file-system "$root"
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "clean-root: installing mmdebstrap on the host"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap
fi

# The Debian bookworm sources this machine's apt uses (Debian's own archive only, no
# third-party repositories); mmdebstrap's default (deb.debian.org) when there are none.
mirrors=()
while read -r uri suite components; do
  mirrors+=("deb $uri $suite $components")
done < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
           'Identifier: Packages' 'Origin: Debian' 2>/dev/null |
         awk '$2 ~ /^bookworm(-updates|-security)?$/ { c[$1" "$2] = c[$1" "$2] " " $3 }
              END { for (k in c) print k c[k] }' | sort -u)

start=$(date +%s)
phase_names=()
phase_secs=()
phase() { phase_names+=("$1"); phase_secs+=("$2"); }

echo "clean-root: building a bookworm minbase root in $root (sources: ${mirrors[*]:-mmdebstrap default})"
t0=$(date +%s)
mmdebstrap --variant=minbase --include=make --customize-hook="touch \"\$1/$marker\"" \
  bookworm "$root" "${mirrors[@]}"
phase "root (mmdebstrap)" $(($(date +%s) - t0))

t0=$(date +%s)
dest=$root/root/darknight
mkdir -p "$dest"
if [ $head -eq 1 ]; then
  git -C "$repo" archive --format=tar HEAD | tar -xf - -C "$dest"
  what="HEAD ($(git -C "$repo" rev-parse --short HEAD))"
else
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
      if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi   # skip deleted files
    done | tar --null -T - -cf -) | tar -xf - -C "$dest"
  what="the working tree"
fi
echo "clean-root: copied $(find "$dest" -type f | wc -l) files of $what to $dest"
cp /etc/resolv.conf "$root/etc/resolv.conf"
phase "copy sources" $(($(date +%s) - t0))

# `make test` in the root, with a clean environment. The mounts live in a private mount
# namespace and vanish with it. Phase boundaries are the commands make echoes.
log=$root/root/make-test.log
marks=$root/root/make-test.marks
echo "clean-root: running make test in the root (log: $log)"
t0=$(date +%s)
exec 3>"$log"
set +e
unshare --mount --propagation private --fork bash -c '
  set -e
  r=$1
  mount -t proc proc "$r/proc"
  mount --rbind /dev "$r/dev"
  mount -t sysfs sysfs "$r/sys"
  exec chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /root/darknight && make test"
' clean-root "$root" 2>&1 | while IFS= read -r line; do
  printf '%s\n' "$line"
  printf '%s\n' "$line" >&3
  case "$line" in
    "cmake -S . -B "*) [ -e "$marks.build" ] || date +%s >"$marks.build" ;;
    "ctest --test-dir "*) [ -e "$marks.ctest" ] || date +%s >"$marks.ctest" ;;
  esac
done
status=${PIPESTATUS[0]}
exec 3>&-
set -e
t_end=$(date +%s)
t_build=$(cat "$marks.build" 2>/dev/null || echo "$t_end")
t_ctest=$(cat "$marks.ctest" 2>/dev/null || echo "$t_end")
phase "make test: deps (apt-get)" $((t_build - t0))
phase "make test: build" $((t_ctest - t_build))
phase "make test: ctest" $((t_end - t_ctest))

echo
echo "clean-root: phase times"
for i in "${!phase_names[@]}"; do
  printf '  %-28s %5d s (%d min %02d s)\n' "${phase_names[$i]}" "${phase_secs[$i]}" \
    $((phase_secs[i] / 60)) $((phase_secs[i] % 60))
done
total=$((t_end - start))
printf '  %-28s %5d s (%d min %02d s)\n' total "$total" $((total / 60)) $((total % 60))
if [ "$status" -eq 0 ]; then
  echo "clean-root: make test passed in a clean Debian 12 root"
else
  echo "clean-root: make test FAILED (exit $status) in the clean root; log: $log" >&2
fi
exit "$status"
