#!/usr/bin/env bash
# Builds the Debian packages vedetta-agent and vedetta-collector with dpkg-deb from a
# staged tree: no tool beyond dpkg (present on every Debian system) and coreutils.
#
#   packaging/build-deb.sh                       # release build, both packages, in target/debian
#   packaging/build-deb.sh --bin-dir target/debug --out /tmp/debs vedetta-agent
#
# Options:
#   --bin-dir DIR       take the binaries from DIR as they are (default: `cargo build
#                       --release --locked` them and use target/release)
#   --version VERSION   Debian version of the packages (default: the binary's own version
#                       followed by -1, e.g. 0.1.0-1)
#   --out DIR           where the .deb files go (default: target/debian)
#   --compression TYPE  xz (default), gzip, zstd or none; passed to dpkg-deb -Z
#
# What goes where (and the maintainer scripts) is in packaging/debian/PACKAGE/; the
# unit files and default configuration are in packaging/. The last line printed for each
# package is the path of the .deb.
set -euo pipefail
umask 022

packaging=$(cd "$(dirname "$0")" && pwd)
workspace=$(dirname "$packaging")
bin_dir=""
version=""
out="$workspace/target/debian"
compression=xz
packages=()

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir|--version|--out|--compression)
            [ $# -ge 2 ] || { echo "build-deb.sh: $1 needs a value" >&2; exit 2; } ;;
    esac
    case "$1" in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --compression) compression=$2; shift 2 ;;
        vedetta-agent|vedetta-collector) packages+=("$1"); shift ;;
        -h|--help) usage ;;
        *) echo "build-deb.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[ ${#packages[@]} -gt 0 ] || packages=(vedetta-agent vedetta-collector)

for tool in dpkg-deb dpkg md5sum gzip; do
    command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool is missing (apt-get install dpkg coreutils gzip)" >&2; exit 1; }
done

if [ -z "$bin_dir" ]; then
    (cd "$workspace" && cargo build --release --locked -p vedetta-agent -p vedetta-collector)
    bin_dir="$workspace/target/release"
fi
bin_dir=$(cd "$bin_dir" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
arch=$(dpkg --print-architecture)

stage=""
trap '[ -z "$stage" ] || rm -rf "$stage"' EXIT

for package in "${packages[@]}"; do
    binary="$bin_dir/$package"
    [ -x "$binary" ] || { echo "build-deb.sh: $binary not found or not executable" >&2; exit 1; }
    upstream=$("$binary" --version | awk '{print $2}')
    package_version=${version:-$upstream-1}
    debian="$packaging/debian/$package"

    stage=$(mktemp -d)
    chmod 0755 "$stage"
    install -D -m 0755 "$binary" "$stage/usr/bin/$package"
    install -D -m 0644 "$packaging/$package.service" "$stage/lib/systemd/system/$package.service"
    doc="$stage/usr/share/doc/$package"
    install -D -m 0644 "$packaging/debian/copyright" "$doc/copyright"
    install -D -m 0644 "$workspace/docs/member-it.md" "$doc/member-it.md"
    printf '%s (%s) unstable; urgency=medium\n\n  * Built from the workspace by packaging/build-deb.sh.\n\n -- Vedetta maintainers <vedetta@example.invalid>  %s\n' \
        "$package" "$package_version" "$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(stat -c %Y "$binary")}")" \
        | gzip -9n >"$doc/changelog.Debian.gz"
    chmod 0644 "$doc/changelog.Debian.gz"
    case "$package" in
        vedetta-agent)
            install -D -m 0644 "$packaging/agent.toml" "$stage/etc/vedetta/agent.toml"
            ;;
        vedetta-collector)
            # `init` writes the live configuration into the data directory, next to the
            # CA it belongs to; this is the commented reference of every key.
            install -D -m 0644 "$packaging/collector.toml" "$doc/examples/collector.toml"
            ;;
    esac

    install -d -m 0755 "$stage/DEBIAN"
    for script in postinst prerm postrm; do
        install -m 0755 "$debian/$script" "$stage/DEBIAN/$script"
    done
    if [ -f "$debian/conffiles" ]; then
        install -m 0644 "$debian/conffiles" "$stage/DEBIAN/conffiles"
    fi
    # The highest glibc symbol version the binary needs is the least libc6 it runs on.
    glibc=$(grep -ao 'GLIBC_2\.[0-9][0-9.]*' "$binary" | sed 's/^GLIBC_//' | sort -uV | tail -n 1)
    installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)
    sed -e "s/@VERSION@/$package_version/" -e "s/@ARCH@/$arch/" \
        -e "s/@INSTALLED_SIZE@/$installed_size/" -e "s/@GLIBC@/${glibc:-2.34}/" \
        "$debian/control" >"$stage/DEBIAN/control"
    (cd "$stage" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' \
        | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
    chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"

    deb="$out/${package}_${package_version}_${arch}.deb"
    dpkg-deb --root-owner-group -Z"$compression" --build "$stage" "$deb" >/dev/null
    rm -rf "$stage"
    stage=""
    echo "$deb"
done
