#!/usr/bin/env bash
# Builds a connwatch release: for each architecture a static binary, a
# tarball and a .deb, and SHA256SUMS over them.
#
#   scripts/release.sh                      # linux amd64 and arm64 into dist/
#   VERSION=1.2.0 scripts/release.sh        # a tagged release (a leading v is dropped)
#   scripts/release.sh --arch amd64 --out /tmp/rel
#
# VERSION defaults to 'git describe' of the newest v* tag: v1.2.0 gives
# 1.2.0; 4 commits later 1.2.0+4.gabc1234 (it sorts after 1.2.0 for dpkg);
# with no tag 0.0.0+COUNT.gHASH; a modified tree adds "dirty".
# The build is reproducible: every date (the stamped build date, tar and
# .deb mtimes, man pages) is SOURCE_DATE_EPOCH, by default the time of the
# HEAD commit, and the same commit, Go version and VERSION give the same
# bytes, so SHA256SUMS can be checked against a rebuild.
#
# Output (the directory must be empty or absent):
#   connwatch_VER_linux_ARCH.tar.gz  connwatch_VER_linux_ARCH/ with the
#       binary, README.md, LICENSE, examples/connwatch.toml,
#       packaging/*.service, completions/ (bash, zsh, fish), man/man1/
#   connwatch_VER_ARCH.deb           made by nfpm from packaging/nfpm.yaml
#   SHA256SUMS                       'sha256sum -c SHA256SUMS' checks them
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s%N)

usage() {
  echo "usage: scripts/release.sh [--arch amd64,arm64] [--out DIR]" >&2
  exit 2
}

arches=(amd64 arm64)
out=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || usage; IFS=, read -r -a arches <<<"$2"; shift 2 ;;
    --arch=*) IFS=, read -r -a arches <<<"${1#*=}"; shift ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    -h|--help) usage ;;
    *) echo "release: unknown argument $1" >&2; usage ;;
  esac
done
for a in "${arches[@]}"; do
  case "$a" in
    amd64|arm64) ;;
    *) echo "release: unsupported architecture $a (amd64, arm64)" >&2; exit 2 ;;
  esac
done

for tool in go tar gzip sha256sum; do
  command -v "$tool" >/dev/null || { echo "release: $tool not found" >&2; exit 1; }
done
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "release: $out is not empty (remove it first: rm -rf $out)" >&2
  exit 1
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Version, revision and date: from git, or from VERSION and
# SOURCE_DATE_EPOCH outside a git work tree.
described=
dirty=
revision=unknown
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git update-index -q --refresh >/dev/null 2>&1 || true
  described=$(git describe --tags --always --dirty --match 'v[0-9]*')
  case "$described" in *-dirty) dirty=1; described=${described%-dirty} ;; esac
  revision=$(git rev-parse HEAD)${dirty:++dirty}
  SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}
elif [ -z "${VERSION:-}" ] || [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  echo "release: not a git work tree: set VERSION and SOURCE_DATE_EPOCH" >&2
  exit 1
fi
if [ -z "${VERSION:-}" ]; then
  if [[ $described =~ ^v(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
    VERSION="${BASH_REMATCH[1]}+${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
  elif [[ $described == v* ]]; then
    VERSION=${described#v}
  else
    VERSION="0.0.0+$(git rev-list --count HEAD).g$described"
  fi
  if [ -n "$dirty" ]; then
    case "$VERSION" in *+*) VERSION+=.dirty ;; *) VERSION+=+dirty ;; esac
  fi
fi
VERSION=${VERSION#v}
if ! [[ $VERSION =~ ^[0-9][0-9A-Za-z.+~-]*$ ]]; then
  echo "release: VERSION $VERSION must start with a digit and hold only letters, digits and . + ~ -" >&2
  exit 1
fi
if ! [[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]]; then
  echo "release: SOURCE_DATE_EPOCH $SOURCE_DATE_EPOCH is not a number of seconds" >&2
  exit 1
fi
export SOURCE_DATE_EPOCH
date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
echo "release: connwatch $VERSION (revision $revision, date $date) for ${arches[*]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pkg=github.com/connwatch/connwatch/internal/version
ldflags="-s -w -X $pkg.Version=$VERSION -X $pkg.Revision=$revision -X $pkg.Date=$date"
# -buildvcs=false: the version is stamped above, and VCS stamping would
# make the bytes depend on untracked files. GOAMD64/GOARM64 pinned to the
# baseline so a setting in the environment cannot change the output.
build() { # build ARCH FILE [TAGS]
  CGO_ENABLED=0 GOOS=linux GOARCH=$1 GOAMD64=v1 GOARM64=v8.0 \
    go build -trimpath -buildvcs=false -tags "${3:-}" -ldflags "$ldflags" -o "$2" ./cmd/connwatch
}

# Completions, man pages and the packaged configuration come from a binary
# that runs here, built with the man page generator the shipped one lacks.
hostarch=$(go env GOHOSTARCH)
host=$work/host/connwatch
build "$hostarch" "$host" manpages
common=$work/common
mkdir -p "$common/completions" "$common/man/man1"
"$host" completion bash >"$common/completions/connwatch.bash"
"$host" completion zsh >"$common/completions/_connwatch"
"$host" completion fish >"$common/completions/connwatch.fish"
"$host" man "$common/man/man1"
gzip -n -9 "$common"/man/man1/*.1
gzip -n -9 -c README.md >"$common/README.md.gz"

# /etc/connwatch/connwatch.toml in the .deb: the example with every key
# commented out, so the agent runs on its defaults (dry-run: nothing
# stops) and a later version's defaults apply to keys nobody set.
{
  cat <<'EOF'
# /etc/connwatch/connwatch.toml, read by connwatch.service (--config).
# Every key below is commented out: the agent runs on its defaults, and
# the default action is dry-run, so nothing stops until you choose an
# action. Uncomment what you change, then check and apply it:
#   connwatch config check /etc/connwatch/connwatch.toml
#   systemctl reload connwatch
# Flags in CONNWATCH_ARGS (/etc/default/connwatch) win over this file.
# Upgrades keep this file; 'apt purge connwatch' removes it.

EOF
  sed -E '/^[[:space:]]*($|#|\[)/!s/^/# /' examples/connwatch.toml
} >"$common/connwatch.toml"
if grep -Ev '^[[:space:]]*($|#|\[)' "$common/connwatch.toml"; then
  echo "release: packaged configuration has a key set (above)" >&2
  exit 1
fi
"$host" config check "$common/connwatch.toml" >/dev/null

# nfpm is a Go tool of its own module (tools/go.mod), so its dependencies
# stay out of connwatch's go.mod.
nfpm() { go tool -modfile=tools/go.mod nfpm "$@"; }

artifacts=()
binaries=()
for arch in "${arches[@]}"; do
  name=connwatch_${VERSION}_linux_$arch
  stage=$work/$arch/$name
  mkdir -p "$stage"
  # Built again even for the host's architecture: the host binary has
  # the man page generator, the shipped one does not.
  build "$arch" "$stage/connwatch"
  chmod 0755 "$stage/connwatch"
  install -m 0644 -D README.md "$stage/README.md"
  install -m 0644 -D LICENSE "$stage/LICENSE"
  install -m 0644 -D examples/connwatch.toml "$stage/examples/connwatch.toml"
  install -m 0644 -D packaging/connwatch.service "$stage/packaging/connwatch.service"
  install -m 0644 -D packaging/connwatch-tunnel@.service "$stage/packaging/connwatch-tunnel@.service"
  cp -r "$common/completions" "$common/man" "$stage/"
  find "$stage" -type d -exec chmod 0755 {} +
  find "$stage" -type f ! -name connwatch -exec chmod 0644 {} +

  tar -C "$work/$arch" --sort=name --mtime="@$SOURCE_DATE_EPOCH" \
    --owner=0 --group=0 --numeric-owner --format=gnu -cf - "$name" |
    gzip -n -9 >"$out/$name.tar.gz"
  artifacts+=("$name.tar.gz")

  deb=connwatch_${VERSION}_$arch.deb
  VERSION=$VERSION ARCH=$arch STAGE=$stage BUILD=$common \
    nfpm package --config packaging/nfpm.yaml --packager deb --target "$out/$deb" >/dev/null
  artifacts+=("$deb")
  binaries+=("$arch $(stat -c %s "$stage/connwatch")")
done

mapfile -t artifacts < <(printf '%s\n' "${artifacts[@]}" | LC_ALL=C sort)
(cd "$out" && sha256sum "${artifacts[@]}" >SHA256SUMS)

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "release: wrote $out"
total=0
for f in "${artifacts[@]}"; do
  size=$(stat -c %s "$out/$f")
  total=$((total + size))
  printf '  %-48s %10d bytes (%s)\n' "$f" "$size" "$(mib "$size")"
done
printf '  %-48s %10d bytes (%s)\n' "together" "$total" "$(mib "$total")"
for b in "${binaries[@]}"; do
  printf '  binary %-41s %10d bytes (%s)\n' "linux/${b% *}" "${b#* }" "$(mib "${b#* }")"
done
elapsed=$(($(date +%s%N) - started))
printf 'release: built in %d.%01d s\n' $((elapsed / 1000000000)) $((elapsed % 1000000000 / 100000000))
